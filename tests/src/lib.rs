//! Helpers for the end-to-end tests in tests/tests/: find the `ferro` binary and the models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `target/<profile>/ferro`, next to the test executable (`target/<profile>/deps/<test>`).
/// Cargo does not build another package's binary for these tests: `cargo build --bin ferro`
/// (with `--release` for `cargo test --release`) must have run first.
pub fn ferro_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join(format!("ferro{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the ferro binary is missing at {}: build it first with `cargo build{} --bin ferro`",
        bin.display(),
        if profile_dir.ends_with("release") {
            " --release"
        } else {
            ""
        }
    );
    bin
}

/// The store directory: `$FERRO_HOME`, default `~/.cache/ferro`.
pub fn ferro_home() -> PathBuf {
    match std::env::var_os("FERRO_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache")
            .join("ferro"),
    }
}

/// `$FERRO_HOME/models/<name>.gguf`.
pub fn model_path(name: &str) -> PathBuf {
    ferro_home().join("models").join(format!("{name}.gguf"))
}

/// The model's path; None only when it is missing and FERRO_SKIP_MODEL_TESTS=1. A missing model
/// otherwise fails the test: model tests never skip silently.
pub fn require_model(name: &str) -> Option<PathBuf> {
    let p = model_path(name);
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("FERRO_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
        eprintln!("skipping: {} is missing and FERRO_SKIP_MODEL_TESTS=1", p.display());
        return None;
    }
    panic!(
        "model {} not found; run `ferro pull {name}` (or set FERRO_SKIP_MODEL_TESTS=1 to skip model tests)",
        p.display()
    );
}

/// Run `ferro ARGS` with FERRO_HOME set to `home`.
pub fn run_ferro(home: &Path, args: &[&str]) -> Output {
    Command::new(ferro_bin())
        .args(args)
        .env("FERRO_HOME", home)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run ferro")
}

/// A fresh empty directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("ferro-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Assert the command failed with exit code 1 and exactly one stderr line, `error: ...`, that
/// contains `needle`, with no panic message or backtrace. Returns the line.
pub fn assert_one_line_error(out: &Output, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr, got: {stderr:?}");
    let line = lines[0];
    assert!(line.starts_with("error: "), "{line}");
    assert!(!line.contains("internal error"), "not a bug path: {line}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert!(
        line.to_lowercase().contains(&needle.to_lowercase()),
        "expected '{needle}' in: {line}"
    );
    line.to_string()
}
