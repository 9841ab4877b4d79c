//! Every binary the project ships answers `--help` and `--version`.

use mesh_e2e::bins::workspace_bin;

const BINARIES: [&str; 9] = [
    "meshd",
    "mesh-proxy",
    "mesh-ingress",
    "mesh-egress",
    "mesh-ca",
    "meshctl",
    "mesh-intercept",
    "mesh-demo-app",
    "mesh-load",
];

#[test]
fn every_binary_answers_help_and_version() {
    for name in BINARIES {
        let bin = workspace_bin(name);
        let help = std::process::Command::new(&bin)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            help.status.success(),
            "{name} --help failed: {}",
            String::from_utf8_lossy(&help.stderr)
        );
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("Usage:"),
            "{name} --help"
        );
        let version = std::process::Command::new(&bin)
            .arg("--version")
            .output()
            .unwrap();
        assert!(version.status.success(), "{name} --version failed");
        let text = String::from_utf8_lossy(&version.stdout);
        assert_eq!(
            text.trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION")),
            "{name} --version"
        );
    }
}
