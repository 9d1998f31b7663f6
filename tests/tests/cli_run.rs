//! `ferro run`, `ferro perplexity` and `ferro gen-model` through the binary.

use std::process::Command;

use ferro_tests::{ferro_bin, require_model};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(include_str!("../fixtures/llama-cpp-reference.json")).unwrap()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

/// `ferro run MODEL PROMPT --raw --temp 0 --json` reproduces llama.cpp's prompt tokens and
/// greedy tokens (to must_match_tokens) for each model's first reference prompt.
#[test]
fn raw_greedy_json_matches_llama_cpp() {
    let r = reference();
    // gemma3's greedy tokens part from llama.cpp's (see golden_generate.rs); its prompt tokens
    // are checked here, its generated tokens by the ignored golden test.
    for (store, refname) in [
        ("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        ("gemma3-270m", "gemma-3-270m-q4_k_m.gguf"),
    ] {
        let Some(path) = require_model(store) else { return };
        let c = &r[refname]["completions"][0];
        let must = c["must_match_tokens"].as_u64().unwrap() as usize;
        let out = Command::new(ferro_bin())
            .arg("run")
            .arg(&path)
            .arg(c["prompt"].as_str().unwrap())
            .args(["--raw", "--temp", "0", "--json", "-c", "128", "-n"])
            .arg(must.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let j: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(ids(&j["prompt_tokens"]), ids(&c["prompt_tokens"]), "{store}");
        if store == "gemma3-270m" {
            let n = ids(&j["tokens"]).len();
            assert!(n > 0 && n <= must, "{store}: {n} tokens for -n {must}");
            continue;
        }
        assert_eq!(ids(&j["tokens"]), ids(&c["greedy_tokens"])[..must], "{store}");
        assert_eq!(
            j["text"].as_str().unwrap(),
            c["must_match_text"].as_str().unwrap(),
            "{store}"
        );
    }
}

/// The default model answers a simple question sensibly through its chat template.
#[test]
fn default_model_knows_the_capital_of_france() {
    if require_model("smollm2-135m-instruct").is_none() {
        return;
    }
    let out = Command::new(ferro_bin())
        // Greedy SmolLM2-135M Q4_1 answers this exact wording "L'Étoile, la Cité, ..." (a quirk of
        // the tiny model at temperature 0); "Tell me the capital of France." gets "... Paris."
        .args(["run", "Tell me the capital of France.", "--temp", "0", "-n", "24"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Paris"), "answer: {text}");
}

/// A prompt longer than the context is one clear error line and exit code 1.
/// A chat prompt piped on stdin is the argument's prompt: its ending line break (`echo`'s, or
/// `\r\n`) is not part of the question. A `--raw` one keeps every byte.
#[test]
fn stdin_prompt_is_the_argument_prompt() {
    use std::io::Write;
    if require_model("smollm2-135m-instruct").is_none() {
        return;
    }
    let q = "Tell me the capital of France.";
    let prompt_tokens = |arg: Option<&str>, stdin: &[u8], raw: bool| -> Vec<u64> {
        let mut cmd = Command::new(ferro_bin());
        cmd.args(["run", "--json", "--temp", "0", "-n", "1"]);
        if raw {
            cmd.arg("--raw");
        }
        cmd.arg(arg.unwrap_or("-"));
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        ids(&j["prompt_tokens"])
    };
    let want = prompt_tokens(Some(q), b"", false);
    assert_eq!(prompt_tokens(None, format!("{q}\n").as_bytes(), false), want);
    assert_eq!(prompt_tokens(None, format!("{q}\r\n").as_bytes(), false), want);
    let raw = prompt_tokens(None, format!("{q}\n").as_bytes(), true);
    assert_eq!(
        raw.len(),
        prompt_tokens(Some(q), b"", true).len() + 1,
        "--raw keeps the line break"
    );
}

/// Generation that runs into the end of the context stops there and says so on stderr; one
/// that stops at -n does not.
#[test]
fn full_context_ends_generation_with_a_note() {
    if require_model("smollm2-135m-instruct").is_none() {
        return;
    }
    let run = |n: &str| {
        let out = Command::new(ferro_bin())
            .args(["run", "hi", "--temp", "0", "-c", "40", "-n", n])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run("100");
    assert!(err.contains("context of 40 tokens is full"), "{err}");
    let err = run("2");
    assert!(!err.contains("full"), "{err}");
}

#[test]
fn prompt_longer_than_context_is_an_error() {
    let Some(path) = require_model("smollm2-135m-instruct") else {
        return;
    };
    let prompt = "word ".repeat(200);
    let out = Command::new(ferro_bin())
        .arg("run")
        .arg(&path)
        .arg(&prompt)
        .args(["--raw", "-c", "64"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("context"), "{err}");
}

/// Options with no meaning (a context whose KV cache cannot fit, a NaN or out-of-range
/// sampling value) are one clear error line and exit code 1, before any token is made.
#[test]
fn impossible_options_are_errors() {
    let Some(path) = require_model("smollm2-135m-instruct") else {
        return;
    };
    for (args, want) in [
        (&["-c", "100000000"][..], "KV cache"),
        (&["--min-p", "nan"][..], "--min-p"),
        (&["--top-p", "1.5"][..], "--top-p"),
        (&["--repeat-penalty", "-1"][..], "--repeat-penalty"),
        (&["--repeat-penalty", "0"][..], "--repeat-penalty"),
        (&["--temp", "inf"][..], "--temp"),
    ] {
        let out = Command::new(ferro_bin())
            .arg("run")
            .arg(&path)
            .arg("hi")
            .args(["--raw", "-n", "2"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// Synthetic models of every architecture generate without NaN through `ferro run`.
#[test]
fn gen_model_tiny_files_run() {
    if require_model("smollm2-135m-instruct").is_none() || require_model("gemma3-270m").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for arch in ["llama", "mistral", "qwen2", "phi3", "gemma3"] {
        let f = dir.path().join(format!("{arch}.gguf"));
        let out = Command::new(ferro_bin())
            .args([
                "gen-model",
                "--arch",
                arch,
                "--shape",
                "tiny",
                "--quant",
                "q8_0",
                "--out",
            ])
            .arg(&f)
            .output()
            .unwrap();
        assert!(out.status.success(), "{arch}: {}", String::from_utf8_lossy(&out.stderr));
        let out = Command::new(ferro_bin())
            .arg("run")
            .arg(&f)
            .args(["hello", "--raw", "--temp", "0", "-n", "8", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{arch}: {}", String::from_utf8_lossy(&out.stderr));
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(ids(&j["tokens"]).len() <= 8, "{arch}: {j}");
    }
}

/// `ferro perplexity` prints `PPL = <value> +/- <err>` as its last line.
#[test]
fn perplexity_command_prints_ppl_line() {
    let Some(path) = require_model("smollm2-135m-instruct") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("text.txt");
    let text: String = include_str!("../fixtures/GPL-3").chars().take(3000).collect();
    std::fs::write(&f, text).unwrap();
    let out = Command::new(ferro_bin())
        .arg("perplexity")
        .arg(&path)
        .arg("-f")
        .arg(&f)
        .args(["-c", "128"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.trim().lines().last().unwrap();
    let parts: Vec<&str> = last.split_whitespace().collect();
    assert_eq!(parts[0..2], ["PPL", "="], "{last}");
    let ppl: f64 = parts[2].parse().unwrap();
    assert!(ppl.is_finite() && ppl > 1.0 && ppl < 200.0, "{last}");
    assert_eq!(parts[3], "+/-");
}

/// `--cache-type f16` holds the KV cache in half the memory of the default f32 and still
/// generates the reference's first greedy tokens; an unknown type is a usage error.
#[test]
fn cache_type_f16_halves_the_kv_cache() {
    let Some(path) = require_model("smollm2-135m-instruct") else {
        return;
    };
    let c = &reference()["SmolLM2-135M-Instruct.Q4_1.gguf"]["completions"][0];
    let kv_mib = |ty: &str| {
        let out = Command::new(ferro_bin())
            .arg("run")
            .arg(&path)
            .arg(c["prompt"].as_str().unwrap())
            .args([
                "--raw",
                "--temp",
                "0",
                "--json",
                "-c",
                "256",
                "-n",
                "8",
                "--verbose",
                "--cache-type",
                ty,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{ty}: {err}");
        let j: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(ids(&j["tokens"]), ids(&c["greedy_tokens"])[..8], "{ty}");
        let mib = err
            .split("KV cache ")
            .nth(1)
            .and_then(|r| r.split(" MiB").next())
            .and_then(|v| v.parse::<f64>().ok());
        mib.unwrap_or_else(|| panic!("{ty}: no KV cache size in {err}"))
    };
    let (f32_mib, f16_mib) = (kv_mib("f32"), kv_mib("f16"));
    assert!(
        f32_mib > 0.0 && (f16_mib * 2.0 - f32_mib).abs() < 0.2,
        "f32 {f32_mib} MiB, f16 {f16_mib} MiB"
    );
    let out = Command::new(ferro_bin())
        .arg("run")
        .arg(&path)
        .args(["hi", "--cache-type", "q8_0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown KV cache type"));
}

/// `-t` past the engine's limit is a usage error in every command that runs a model, before
/// any model is read (100000 spinning workers on two cores took minutes a token).
#[test]
fn too_many_threads_is_a_usage_error() {
    let over = (ferro_engine::MAX_THREADS + 1).to_string();
    for cmd in [
        &["run", "no-such-model.gguf", "hi"][..],
        &["bench", "no-such-model.gguf"][..],
        &["perplexity", "no-such-model.gguf", "-f", "no-such-file"][..],
        &["serve", "no-such-model.gguf"][..],
    ] {
        let out = Command::new(ferro_bin())
            .args(cmd)
            .args(["-t", &over])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
        assert!(err.contains("at most 512 threads"), "{cmd:?}: {err}");
    }
}

/// The engine refuses such a thread count too (for library callers that skip the CLI).
#[test]
fn engine_refuses_too_many_threads() {
    let Some(path) = require_model("smollm2-135m-instruct") else {
        return;
    };
    let opts = ferro_engine::ModelOptions {
        threads: ferro_engine::MAX_THREADS + 1,
        n_ctx: 64,
        ..Default::default()
    };
    let err = ferro_engine::Model::load(&path, &opts).expect_err("too many threads");
    assert!(err.to_string().contains("at most 512"), "{err}");
}
