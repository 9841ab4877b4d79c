//! `meshctl completion` prints scripts that know meshctl's subcommands.

const MESHCTL: &str = env!("CARGO_BIN_EXE_meshctl");

#[test]
fn bash_completion_lists_the_subcommands_and_is_valid_bash() {
    let out = std::process::Command::new(MESHCTL)
        .args(["completion", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for sub in ["analyze", "apply", "proxy-status", "inject", "manifest"] {
        assert!(
            script.contains(sub),
            "{sub} missing from the bash completion"
        );
    }
    let mut bash = std::process::Command::new("bash")
        .args(["-n"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut bash.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(
        bash.wait().unwrap().success(),
        "bash -n rejected the completion script"
    );
}

#[test]
fn unknown_shell_is_rejected_with_the_choices() {
    let out = std::process::Command::new(MESHCTL)
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("possible values: bash"), "{err}");
}
