//! `meshctl analyze`: validation and cross-resource analysis of config files.
//!
//! Reads every `*.yaml`, `*.yml` and `*.json` file named (directories are
//! walked recursively, in name order), parses and validates each document,
//! runs the cross-resource analysis over everything that is valid, and
//! prints one line per finding. Exits 1 when any finding is an error.
//! Documents that are not mesh resources (API groups other than Istio's and
//! `policy.mesh.dev`, e.g. a `Deployment`) are skipped.
//! The codes are listed in `docs/analysis-codes.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use mesh_model::analysis::{Finding, Severity, analyze};
use mesh_model::{ProblemKind, load_documents};

/// Flags of `meshctl analyze`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories of YAML/JSON to analyze.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// How findings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per finding, then a summary.
    Text,
    /// A JSON array of findings.
    Json,
}

/// The outcome of analyzing a set of files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// How many files were read.
    pub files: usize,
    /// Parse and validation errors (`MESH0001`, `MESH0002`) then analysis
    /// findings, errors first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether any finding is an error (the command then exits 1).
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// The text output: one line per finding and a summary line.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let _ = writeln!(out, "{f}");
        }
        let files = plural(self.files, "file");
        if self.findings.is_empty() {
            let _ = writeln!(out, "✔ No validation issues found when analyzing {files}");
        } else {
            let errors = self
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            let others = self.findings.len() - errors;
            let _ = writeln!(
                out,
                "✘ {} and {} found when analyzing {files}",
                plural(errors, "error"),
                plural(others, "warning")
            );
        }
        out
    }

    /// The JSON output: an array of findings.
    pub fn render_json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(&self.findings)?)
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Collects the config files under `paths` (files as given, directories
/// recursively, keeping `*.yaml`, `*.yml`, `*.json`), in a stable order.
pub fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads, parses, validates and analyzes the files under `paths`.
pub fn analyze_paths(paths: &[PathBuf]) -> anyhow::Result<Report> {
    let files = collect_files(paths)?;
    let mut findings = Vec::new();
    let mut resources = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let (ok, errors) = load_documents(&text, &file.display().to_string());
        // Kubernetes objects (Deployments, Services...) often share files
        // with mesh config; like istioctl, skip them rather than fail.
        findings.extend(
            errors
                .iter()
                .filter(|e| !matches!(e.problem, ProblemKind::Foreign { .. }))
                .map(Finding::from_model_error),
        );
        resources.extend(ok);
    }
    findings.extend(analyze(&resources));
    // Stable: parse/validation errors keep file order within each severity.
    findings.sort_by_key(|f| f.severity);
    Ok(Report {
        files: files.len(),
        findings,
    })
}

/// Runs `meshctl analyze`.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let report = analyze_paths(&args.files)?;
    match args.output {
        Format::Text => print!("{}", report.render_text()),
        Format::Json => println!("{}", report.render_json()?),
    }
    Ok(if report.has_errors() { 1 } else { 0 })
}
