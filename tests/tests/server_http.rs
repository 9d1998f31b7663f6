//! `ferro serve` over raw HTTP: every bad input gets OpenAI's error shape and status, a client
//! that disconnects frees its slot, concurrent greedy streams equal the same requests alone, the
//! queue is bounded, and SIGTERM stops the server with exit status 0.

mod server_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server_common::{http, parse_response, Server};

/// The error body: `{"error": {"message", "type", "param", "code"}}`.
fn error_of(r: &server_common::Response) -> Value {
    let v = r.json();
    let e = v
        .get("error")
        .unwrap_or_else(|| panic!("no error object: {}", r.body))
        .clone();
    for k in ["message", "type", "param", "code"] {
        assert!(e.get(k).is_some(), "error lacks {k}: {}", r.body);
    }
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    e
}

const CHAT: &str = r#"{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}"#;

#[test]
fn bad_inputs_get_openai_errors() {
    let Some(s) = Server::start(&["--max-body", "4096"]) else {
        return;
    };

    let r = s.post("/v1/chat/completions", "{\"messages\": [");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(error_of(&r)["type"], "invalid_request_error");

    let r = s.post(
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "Hi"}], "temperature": "hot"}"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(error_of(&r)["param"], "temperature", "{}", r.body);

    let r = s.post(
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": 5}]}"#,
    );
    assert_eq!(r.status, 400);
    assert!(
        error_of(&r)["param"].as_str().unwrap().starts_with("messages[0]"),
        "{}",
        r.body
    );

    let r = s.post("/v1/chat/completions", r#"{"model": "x"}"#);
    assert_eq!(r.status, 400);
    assert_eq!(error_of(&r)["param"], "messages");

    let r = s.post("/v1/completions", r#"{"prompt": "Hi", "max_tokens": -3}"#);
    assert_eq!(r.status, 400);
    assert_eq!(error_of(&r)["param"], "max_tokens");

    let r = s.post(
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "Hi"}], "n": 99}"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(error_of(&r)["param"], "n");

    let r = s.post("/v1/completions", r#"{"prompt": "Hi", "repetition_penalty": 0}"#);
    assert_eq!(r.status, 400);
    assert_eq!(error_of(&r)["param"], "repetition_penalty");

    let r = s.post(
        "/v1/chat/completions",
        r#"{"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}]}"#,
    );
    assert_eq!(r.status, 404);
    assert_eq!(error_of(&r)["code"], "model_not_found");

    let r = s.request("GET", "/v1/nothing", &[], None);
    assert_eq!(r.status, 404);
    error_of(&r);
    let r = s.request("GET", "/v1/chat/completions", &[], None);
    assert_eq!(r.status, 405);
    error_of(&r);

    let big = format!(r#"{{"prompt": "{}"}}"#, "a".repeat(8000));
    let r = s.post("/v1/completions", &big);
    assert_eq!(r.status, 413, "{}", r.body);
    error_of(&r);

    // Context is 1024 per sequence.
    let r = s.post("/v1/completions", r#"{"prompt": "Hello", "max_tokens": 5000}"#);
    assert_eq!(r.status, 400);
    let msg = error_of(&r)["message"].as_str().unwrap().to_string();
    assert!(msg.contains("1024") && msg.contains("5000"), "{msg}");
    // Token ids keep the body under --max-body while the prompt exceeds the context.
    let long = json!({"prompt": vec![28u32; 1100], "max_tokens": 1}).to_string();
    let r = s.post("/v1/completions", &long);
    assert_eq!(r.status, 400);
    assert!(error_of(&r)["message"].as_str().unwrap().contains("1024"));

    let r = s.post("/v1/completions", r#"{"prompt": [999999999]}"#);
    assert_eq!(r.status, 400);
    error_of(&r);

    // The server still works after all that.
    let r = s.post("/v1/chat/completions", CHAT);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["object"], "chat.completion");
}

/// `logit_bias` moves the logits of the tokens it names (a bias of 100 makes greedy choose
/// that token every step, -100 bans it), and bad maps get a 400 naming `logit_bias`.
#[test]
fn logit_bias_moves_and_bans_tokens() {
    let Some(s) = Server::start(&[]) else {
        return;
    };
    let path = server_common::model_path().unwrap();
    let tok = ferro_engine::tokenizer::Tokenizer::from_gguf(&ferro_gguf::Gguf::open(&path).unwrap()).unwrap();
    let text_of = |bias: Value| {
        let body = json!({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0, "logit_bias": bias});
        let r = s.post("/v1/completions", &body.to_string());
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["choices"][0]["text"].as_str().unwrap().to_string()
    };
    let plain = text_of(json!({}));
    let forced = text_of(json!({"28": 100}));
    assert_eq!(forced, tok.decode(&[28, 28, 28]), "token 28 forced");
    let first = tok.encode(&plain, false, false)[0];
    let banned = text_of(json!({ first.to_string(): -100 }));
    assert_ne!(banned, plain, "banning the first greedy token {first} changes the text");
    assert!(!tok.encode(&banned, false, false).starts_with(&[first]), "{banned:?}");

    for (bias, want) in [
        (json!({"hello": 1}), "token ids"),
        (json!({"28": 101}), "between -100 and 100"),
        (json!({"99999999": 1}), "outside the vocabulary"),
    ] {
        let body = json!({"prompt": "Hi", "max_tokens": 1, "logit_bias": bias});
        let r = s.post("/v1/completions", &body.to_string());
        assert_eq!(r.status, 400, "{}", r.body);
        let e = error_of(&r);
        assert_eq!(e["param"], "logit_bias");
        assert!(e["message"].as_str().unwrap().contains(want), "{}", r.body);
    }
}

#[test]
fn api_key_is_required_when_set() {
    let Some(s) = Server::start(&["--api-key", "sekrit"]) else {
        return;
    };
    let r = s.post("/v1/chat/completions", CHAT);
    assert_eq!(r.status, 401);
    assert_eq!(error_of(&r)["code"], "invalid_api_key");
    let wrong = [("Authorization", "Bearer nope"), ("Content-Type", "application/json")];
    assert_eq!(
        s.request("POST", "/v1/chat/completions", &wrong, Some(CHAT)).status,
        401
    );
    let right = [("Authorization", "Bearer sekrit"), ("Content-Type", "application/json")];
    let r = s.request("POST", "/v1/chat/completions", &right, Some(CHAT));
    assert_eq!(r.status, 200, "{}", r.body);
    // Health stays open for probes.
    assert_eq!(s.request("GET", "/health", &[], None).status, 200);
}

#[test]
fn health_metrics_and_cors() {
    let Some(s) = Server::start(&["--cors", "http://example.test"]) else {
        return;
    };
    let r = s.request("GET", "/health", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    assert_eq!(s.post("/v1/chat/completions", CHAT).status, 200);
    let m = s.request("GET", "/metrics", &[], None);
    assert_eq!(m.status, 200);
    for name in [
        "ferro_requests_total",
        "ferro_prompt_tokens_total",
        "ferro_completion_tokens_total",
        "ferro_queue_depth",
        "ferro_tokens_per_second",
        "ferro_time_to_first_token_seconds_count 1",
    ] {
        assert!(m.body.contains(name), "metrics lack {name}:\n{}", m.body);
    }
    let pre = s.request(
        "OPTIONS",
        "/v1/chat/completions",
        &[
            ("Origin", "http://example.test"),
            ("Access-Control-Request-Method", "POST"),
        ],
        None,
    );
    assert!(pre.status < 300, "{pre:?}");
    assert_eq!(pre.header("access-control-allow-origin"), Some("http://example.test"));
}

/// Greedy streams run together give what each gives alone.
#[test]
fn concurrent_greedy_streams_equal_solo_runs() {
    let Some(s) = Server::start(&["--parallel", "4"]) else {
        return;
    };
    let prompts: Vec<String> = (0..8)
        .map(|i| format!("Write a short sentence about the number {i}."))
        .collect();
    let body = |p: &str, stream: bool| {
        json!({"messages": [{"role": "user", "content": p}], "max_tokens": 16, "temperature": 0, "stream": stream})
            .to_string()
    };
    let solo: Vec<String> = prompts
        .iter()
        .map(|p| {
            let r = s.post("/v1/chat/completions", &body(p, false));
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let addr = s.addr.clone();
    let handles: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (addr, b) = (addr.clone(), body(p, true));
            std::thread::spawn(move || {
                let r = http(
                    &addr,
                    "POST",
                    "/v1/chat/completions",
                    &[("Content-Type", "application/json")],
                    Some(b.as_bytes()),
                );
                assert_eq!(r.status, 200, "{}", r.body);
                let data = r.sse_data();
                assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
                data.iter()
                    .filter(|d| *d != "[DONE]")
                    .map(|d| serde_json::from_str::<Value>(d).unwrap())
                    .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
                    .collect::<String>()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let together = h.join().unwrap();
        assert_eq!(together, solo[i], "stream {i} differs from its solo run");
    }
}

fn metric(s: &Server, name: &str) -> f64 {
    let m = s.request("GET", "/metrics", &[], None);
    m.body
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {}", m.body))
}

#[test]
fn disconnect_cancels_generation() {
    let Some(s) = Server::start(&["--parallel", "1"]) else {
        return;
    };
    let body = json!({"prompt": "Once upon a time", "max_tokens": 900, "temperature": 0, "stream": true,
        "stop": [], "repetition_penalty": 1.0})
    .to_string();
    let mut c = TcpStream::connect(&s.addr).unwrap();
    write!(
        c,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Wait for the first tokens, then hang up.
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\"text\"") {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early");
        got.extend_from_slice(&buf[..n]);
    }
    drop(c);
    // The slot comes free long before 900 tokens could be made.
    let t0 = Instant::now();
    while metric(&s, "ferro_active_sequences") > 0.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the sequence was never cancelled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(metric(&s, "ferro_completion_tokens_total") < 900.0);
    // And the one slot serves the next request.
    let r = s.post("/v1/chat/completions", CHAT);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn full_queue_answers_503() {
    let Some(s) = Server::start(&["--parallel", "1", "--queue", "1"]) else {
        return;
    };
    // One long request holds the only slot ...
    let long = json!({"prompt": "Once upon a time", "max_tokens": 400, "temperature": 0, "stream": true}).to_string();
    let mut c = TcpStream::connect(&s.addr).unwrap();
    write!(
        c,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{long}",
        long.len()
    )
    .unwrap();
    let mut buf = [0u8; 1024];
    assert!(c.read(&mut buf).unwrap() > 0);
    // ... so of two more, at most one fits in the queue.
    let addr = s.addr.clone();
    let waiting = std::thread::spawn(move || {
        http(
            &addr,
            "POST",
            "/v1/chat/completions",
            &[("Content-Type", "application/json")],
            Some(CHAT.as_bytes()),
        )
        .status
    });
    std::thread::sleep(Duration::from_millis(300));
    let r = s.post("/v1/chat/completions", CHAT);
    drop(c);
    let other = waiting.join().unwrap();
    let statuses = [r.status, other];
    assert!(statuses.contains(&503), "{statuses:?}");
    if r.status == 503 {
        assert_eq!(error_of(&r)["code"], "server_overloaded");
    }
}

#[test]
fn sigterm_stops_cleanly_and_default_host_is_loopback() {
    let Some(model) = server_common::model_path() else {
        return;
    };
    let mut child = Command::new(server_common::ferro_bin())
        .arg("serve")
        .arg(&model)
        .args(["--port", "0", "-c", "256"])
        .env("FERRO_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert!(line.contains("http://127.0.0.1:"), "{line}");
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();
    let r = http(&addr, "GET", "/health", &[], None);
    assert_eq!(r.status, 200);
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn parse_response_handles_chunked_bodies() {
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let r = parse_response(raw);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "hello world");
}
