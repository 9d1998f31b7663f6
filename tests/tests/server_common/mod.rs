//! Shared by the server tests: start `ferro serve` on a free loopback port, a tiny HTTP/1.1
//! client over std::net, and the Python venv with the official `openai` package.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

pub const MODEL: &str = "smollm2-135m-instruct";

/// `target/<profile>/ferro`, built by `cargo build --bin ferro` before the tests.
pub fn ferro_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps");
    let bin = dir.join(format!("ferro{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the ferro binary is missing at {}: run `cargo build --bin ferro` first",
        bin.display()
    );
    bin
}

pub fn model_path() -> Option<PathBuf> {
    let home = match std::env::var_os("FERRO_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ferro"),
    };
    let p = home.join("models").join(format!("{MODEL}.gguf"));
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("FERRO_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
        eprintln!("skipping: {} is missing and FERRO_SKIP_MODEL_TESTS=1", p.display());
        return None;
    }
    panic!("model {} not found; run `ferro pull {MODEL}`", p.display());
}

/// A running server, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    /// Start with `extra` arguments (a free port is chosen by the OS: `--port 0`).
    pub fn start(extra: &[&str]) -> Option<Server> {
        let model = model_path()?;
        let mut child = Command::new(ferro_bin())
            .arg("serve")
            .arg(&model)
            .args(["--host", "127.0.0.1", "--port", "0", "-c", "1024", "--threads", "2"])
            .args(extra)
            .env("FERRO_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ferro serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .filter(|a| a.contains(':'))
            .unwrap_or_else(|| panic!("unexpected first line from ferro serve: {line:?}"))
            .to_string();
        Some(Server { child, addr })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Response {
        http(&self.addr, method, path, headers, body.map(str::as_bytes))
    }

    pub fn post(&self, path: &str, body: &str) -> Response {
        self.request("POST", path, &[("Content-Type", "application/json")], Some(body))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `data:` payloads of an SSE body.
    pub fn sse_data(&self) -> Vec<String> {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }
}

/// One request on a fresh connection (`Connection: close`), chunked bodies decoded.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    if let Some(b) = body {
        // The server may answer (413) before reading everything.
        let _ = s.write_all(b);
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(b.len());
        out.extend_from_slice(&b[start..end]);
        b = &b[(end + 2).min(b.len())..];
    }
    out
}

/// The venv's python with `openai` installed (created once under target/, reused after).
pub fn python() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let venv = target.join("py-openai");
    let py = venv.join("bin").join("python");
    let has_openai = |py: &PathBuf| {
        Command::new(py)
            .args(["-c", "import openai"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_openai(&py) {
        return py;
    }
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "could not create a venv at {}", venv.display());
    let ok = Command::new(&py)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "openai"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok && has_openai(&py), "pip install openai failed");
    py
}

/// Run scenarios of tests/python/openai_scenarios.py against `server`.
pub fn run_scenarios(server: &Server, names: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/openai_scenarios.py");
    let out = Command::new(python())
        .arg(script)
        .arg(server.base_url())
        .arg(MODEL)
        .args(names)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scenarios {names:?} failed:\n{stdout}\n{stderr}");
    for n in names {
        assert!(stdout.contains(&format!("ok {n}")), "{n} did not report ok:\n{stdout}");
    }
}
