//! The model store through the binary: `pull URL` against a server started here on 127.0.0.1
//! (streamed, resumed with Range after an interruption, sha256-checked), `list`, `rm`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use ferro_gguf::{GgmlType, Gguf, GgufWriter, MetaValue};
use ferro_tests::{assert_one_line_error, run_ferro, TempDir};
use sha2::{Digest, Sha256};

/// What the server saw: one entry per request, (path, Range header).
type Log = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A minimal HTTP/1.1 file server with Range support. Paths starting with `/cut/` are cut off
/// half-way the first time they are served in full (the connection closes early).
fn serve(files: HashMap<String, Vec<u8>>) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut cut_done: Vec<String> = Vec::new();
        for stream in listener.incoming().flatten() {
            handle(stream, &files, &log2, &mut cut_done);
        }
    });
    (base, log)
}

fn handle(mut s: TcpStream, files: &HashMap<String, Vec<u8>>, log: &Log, cut_done: &mut Vec<String>) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut first = String::new();
    if r.read_line(&mut first).is_err() {
        return;
    }
    let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    log.lock().unwrap().push((path.clone(), range.clone()));
    let Some(body) = files.get(&path) else {
        let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match start {
        Some(st) if st >= body.len() => {
            let _ = write!(s, "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", body.len());
        }
        Some(st) => {
            let _ = write!(
                s,
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {st}-{}/{}\r\nConnection: close\r\n\r\n",
                body.len() - st,
                body.len() - 1,
                body.len()
            );
            let _ = s.write_all(&body[st..]);
        }
        None => {
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if path.starts_with("/cut/") && !cut_done.contains(&path) {
                cut_done.push(path.clone());
                let _ = s.write_all(&body[..body.len() / 2]);
                let _ = s.flush();
                let _ = s.shutdown(std::net::Shutdown::Both);
                return;
            }
            let _ = s.write_all(body);
        }
    }
    let _ = s.flush();
}

fn model_bytes(seed: u8) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", MetaValue::String("llama".into()))
        .unwrap();
    w.set("general.name", MetaValue::String(format!("served {seed}")))
        .unwrap();
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i as u8) ^ seed).collect();
    w.add_tensor("w", &[256, 256], GgmlType::F32, data).unwrap();
    w.to_bytes().unwrap()
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn models_in(home: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(home.join("models"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn pull_url_list_rm() {
    let body = model_bytes(1);
    let (base, log) = serve(HashMap::from([("/dir/tiny.gguf".to_string(), body.clone())]));
    let home = TempDir::new("store-pull");
    let url = format!("{base}/dir/tiny.gguf");
    let out = run_ferro(home.path(), &["pull", &url, "--sha256", &sha(&body).to_uppercase()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored = home.path().join("models/tiny.gguf");
    assert_eq!(std::fs::read(&stored).unwrap(), body);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), stored.to_str().unwrap());
    assert_eq!(log.lock().unwrap().len(), 1);
    assert!(Gguf::open(&stored).is_ok());

    let out = run_ferro(home.path(), &["list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("tiny"), "{text}");
    assert!(
        text.contains("smollm2-135m-instruct"),
        "known names are offered: {text}"
    );

    let out = run_ferro(home.path(), &["rm", "tiny"]);
    assert!(out.status.success());
    assert!(models_in(home.path()).is_empty());
    let out = run_ferro(home.path(), &["list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no models"));
}

#[test]
fn interrupted_download_resumes_with_range() {
    let body = model_bytes(2);
    let (base, log) = serve(HashMap::from([("/cut/resumable.gguf".to_string(), body.clone())]));
    let home = TempDir::new("store-resume");
    let url = format!("{base}/cut/resumable.gguf");
    let first = run_ferro(home.path(), &["pull", &url, "--sha256", &sha(&body)]);
    assert_one_line_error(&first, "interrupted");
    assert!(models_in(home.path()).is_empty(), "nothing half-written in models/");
    let part = home.path().join("partial/resumable.gguf.download");
    let have = std::fs::metadata(&part)
        .expect("partial download kept for resuming")
        .len();
    assert!(have > 0 && (have as usize) < body.len());

    let second = run_ferro(home.path(), &["pull", &url, "--sha256", &sha(&body)]);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert_eq!(std::fs::read(home.path().join("models/resumable.gguf")).unwrap(), body);
    assert!(!part.exists());
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].1, None);
    assert_eq!(
        log[1].1.as_deref(),
        Some(format!("bytes={have}-").as_str()),
        "resumed where it stopped"
    );
}

#[test]
fn sha_mismatch_leaves_nothing() {
    let body = model_bytes(3);
    let (base, _) = serve(HashMap::from([("/bad.gguf".to_string(), body.clone())]));
    let home = TempDir::new("store-sha");
    let wrong = "0".repeat(64);
    let out = run_ferro(home.path(), &["pull", &format!("{base}/bad.gguf"), "--sha256", &wrong]);
    let line = assert_one_line_error(&out, "sha256 mismatch");
    assert!(line.contains(&sha(&body)), "{line}");
    assert!(models_in(home.path()).is_empty());
    assert!(!home.path().join("partial/bad.gguf.download").exists());
    assert_one_line_error(
        &run_ferro(home.path(), &["pull", &format!("{base}/bad.gguf"), "--sha256", "xyz"]),
        "64 hex",
    );
}

#[test]
fn http_errors_and_non_gguf_downloads() {
    let (base, _) = serve(HashMap::from([(
        "/text.gguf".to_string(),
        b"not a model at all".to_vec(),
    )]));
    let home = TempDir::new("store-errors");
    assert_one_line_error(
        &run_ferro(home.path(), &["pull", &format!("{base}/missing.gguf")]),
        "404",
    );
    assert_one_line_error(
        &run_ferro(home.path(), &["pull", &format!("{base}/text.gguf")]),
        "not a valid GGUF",
    );
    assert!(models_in(home.path()).is_empty());
    assert_one_line_error(
        &run_ferro(home.path(), &["pull", "http://127.0.0.1:1/x.gguf"]),
        "127.0.0.1:1",
    );
}
