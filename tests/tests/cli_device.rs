//! `--device cpu|gpu|auto` end to end through the binary. The GPU runs are on whatever adapter
//! wgpu finds; in CI that is lavapipe (Mesa's Vulkan on the CPU, installed by scripts/test),
//! which is slow, so every GPU run here is a handful of tokens in a small context.
//!
//! `NODEVICE_SELECT=1` turns off Mesa's device-select layer, which otherwise prints an
//! `XDG_RUNTIME_DIR` complaint on stderr on machines without a display.

mod server_common;

use std::path::Path;
use std::process::{Command, Output};

use ferro_tests::{assert_one_line_error, ferro_bin, require_model, TempDir};
use serde_json::Value;

const MODEL: &str = "smollm2-135m-instruct";

fn ferro(args: &[&str]) -> Output {
    Command::new(ferro_bin())
        .args(args)
        .env("NODEVICE_SELECT", "1")
        .env_remove("FERRO_LOG")
        .output()
        .expect("run ferro")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// False (after saying so) when GPU tests are switched off with FERRO_SKIP_GPU_TESTS=1.
fn gpu_tests() -> bool {
    if std::env::var("FERRO_SKIP_GPU_TESTS").as_deref() == Ok("1") {
        eprintln!("skipping GPU test: FERRO_SKIP_GPU_TESTS=1");
        return false;
    }
    true
}

fn run_json(model: &Path, device: &str, n: &str) -> Value {
    run_prompt_json(model, "The capital of France is", device, n)
}

fn run_prompt_json(model: &Path, prompt: &str, device: &str, n: &str) -> Value {
    let out = ferro(&[
        "run",
        model.to_str().unwrap(),
        prompt,
        "--raw",
        "--temp",
        "0",
        "--json",
        "-n",
        n,
        "-c",
        "64",
        "--device",
        device,
    ]);
    serde_json::from_str(&ok(&out)).expect("one JSON object")
}

/// Greedy tokens on the GPU are the CPU's.
#[test]
fn gpu_greedy_run_equals_cpu() {
    let Some(model) = require_model(MODEL) else { return };
    if !gpu_tests() {
        return;
    }
    let cpu = run_json(&model, "cpu", "6");
    let gpu = run_json(&model, "gpu", "6");
    assert_eq!(cpu["prompt_tokens"], gpu["prompt_tokens"]);
    assert_eq!(cpu["tokens"].as_array().unwrap().len(), 6, "{cpu}");
    assert_eq!(gpu["tokens"], cpu["tokens"], "gpu {gpu} cpu {cpu}");
    assert_eq!(gpu["text"], cpu["text"]);
}

fn ppl(stdout: &str) -> f64 {
    let last = stdout.lines().last().unwrap_or_default();
    last.strip_prefix("PPL = ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no PPL line in {stdout:?}"))
}

fn perplexity(model: &Path, text: &Path, ctx: &str, device: &str) -> f64 {
    let out = ferro(&[
        "perplexity",
        model.to_str().unwrap(),
        "-f",
        text.to_str().unwrap(),
        "-c",
        ctx,
        "--device",
        device,
    ]);
    ppl(&ok(&out))
}

/// Perplexity on the GPU agrees with the CPU's on one chunk of 32 tokens (15 scored).
///
/// The bound is 5%, not the 0.5% of the long-text test below: the GPU rounds activations to
/// Q8 blocks as the CPU does, but values near a rounding step fall either way with a different
/// summation order, so single-token NLLs differ by ~0.1 between any two correct orders (the GPU
/// with and without its CPU-rounding emulation differ as much), and 15 tokens average little
/// of it out: on this text the CPU's scalar and AVX2 kernels give 30.77 and 30.23 (1.8% apart),
/// the GPU 31.31 (3.6% from the AVX2 CPU path). A wrong position, mask or cache slot moves PPL
/// by far more than 5%.
#[test]
fn gpu_perplexity_agrees_with_cpu_on_a_short_text() {
    gpu_perplexity_near_cpu(
        "The river runs through the old town, past the market and the church, and the \
         children walk along it to school every morning. In winter the water freezes and \
         the whole town goes skating.",
        "32",
        0.05,
    );
}

/// SmolLM2's perplexity of `text` in chunks of `ctx` on the GPU within `tol` (relative) of the
/// CPU's (where GPU tests run and the model is there).
fn gpu_perplexity_near_cpu(text: &str, ctx: &str, tol: f64) {
    let Some(model) = require_model(MODEL) else { return };
    if !gpu_tests() {
        return;
    }
    let dir = TempDir::new("device-ppl");
    let path = dir.path().join("text.txt");
    std::fs::write(&path, text).unwrap();
    let cpu = perplexity(&model, &path, ctx, "cpu");
    let gpu = perplexity(&model, &path, ctx, "gpu");
    assert!(cpu.is_finite() && cpu > 1.0, "cpu PPL {cpu}");
    let rel = (gpu - cpu).abs() / cpu;
    assert!(rel < tol, "gpu PPL {gpu} vs cpu {cpu}: {:.3}% apart", rel * 100.0);
}

/// Chunks of 256 tokens (forward calls of 128 and 127) take the prefill tiles (gemmq.wgsl's
/// int8 tiles from 33 tokens) where the short text above takes the batched decode products:
/// the first 2600 bytes of GPL-3 (2 chunks, 254 scored tokens), within 2% of the CPU (17.59 on
/// this machine; the GPU 17.62 on lavapipe, 17.52 with gemm.wgsl's f32 tiles).
#[test]
fn gpu_perplexity_agrees_with_cpu_in_prefill_tiles() {
    let gpl = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/GPL-3")).unwrap();
    gpu_perplexity_near_cpu(&gpl[..gpl.floor_char_boundary(2600)], "256", 0.02);
}

/// The issue's bar on a real GPU: GPL-3 at -c 512 (14 chunks, ~3.6k scored tokens) within 0.5%
/// of llama-perplexity's 18.3914 (golden_perplexity.rs holds the CPU to the same). 11 minutes on
/// lavapipe with two cores (18.3712 with gemmq.wgsl's int8 tiles), seconds on a GPU: `cargo test --release -p ferro-tests --test cli_device -- --ignored`.
#[test]
#[ignore = "needs a hardware GPU (11 minutes on lavapipe)"]
fn gpu_perplexity_on_gpl3_matches_llama_cpp() {
    let Some(model) = require_model(MODEL) else { return };
    let text = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/GPL-3");
    let gpu = perplexity(&model, &text, "512", "gpu");
    let rel = (gpu - 18.3914).abs() / 18.3914;
    assert!(
        rel < 0.005,
        "gpu PPL {gpu} vs llama.cpp 18.3914: {:.3}% apart",
        rel * 100.0
    );
}

/// The bench table and records name the backend that ran.
#[test]
fn bench_names_the_backend() {
    let Some(model) = require_model(MODEL) else { return };
    let bench = |device: &str, json: bool| {
        let mut args = vec![
            "bench",
            model.to_str().unwrap(),
            "-p",
            "4",
            "-n",
            "0",
            "-r",
            "1",
            "--device",
            device,
        ];
        if json {
            args.push("--json");
        }
        ok(&ferro(&args))
    };
    let cpu: Value = serde_json::from_str(&bench("cpu", true)).unwrap();
    assert_eq!(cpu[0]["backend"], "CPU");
    assert!(cpu[0].get("gpu").is_none(), "{cpu}");
    // lavapipe is a software adapter: auto keeps to the CPU.
    let auto = bench("auto", false);
    assert!(auto.lines().any(|l| l.contains("| CPU ")), "{auto}");
    if !gpu_tests() {
        return;
    }
    let gpu: Value = serde_json::from_str(&bench("gpu", true)).unwrap();
    let backend = gpu[0]["backend"].as_str().unwrap();
    assert!(["Vulkan", "Metal", "Dx12"].contains(&backend), "{gpu}");
    assert!(!gpu[0]["gpu"].as_str().unwrap().is_empty(), "{gpu}");
}

/// `--parallel 1,2` adds tgNxP rows (P sequences decoded together) on either device;
/// `--parallel 0` is one clear error.
#[test]
fn bench_parallel_rows() {
    let Some(model) = require_model(MODEL) else { return };
    let bench = |device: &str, parallel: &str| {
        ferro(&[
            "bench",
            model.to_str().unwrap(),
            "-p",
            "0",
            "-n",
            "3",
            "-r",
            "1",
            "--parallel",
            parallel,
            "--json",
            "--device",
            device,
        ])
    };
    let mut devices = vec!["cpu"];
    if gpu_tests() {
        devices.push("gpu");
    }
    for device in devices {
        let recs: Value = serde_json::from_str(&ok(&bench(device, "1,2"))).unwrap();
        let tests: Vec<(&str, u64)> = recs
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["test"].as_str().unwrap(), r["n_parallel"].as_u64().unwrap()))
            .collect();
        assert_eq!(tests, [("tg3", 1), ("tg3x2", 2)], "{device}: {recs}");
        for r in recs.as_array().unwrap() {
            assert!(r["tokens_per_second"].as_f64().unwrap() > 0.0, "{device}: {r}");
        }
    }
    assert_one_line_error(&bench("cpu", "0"), "--parallel takes 1 to 256 sequences");
}

/// An unknown device is one clear error line and exit code 1, before any model is loaded.
#[test]
fn unknown_device_is_a_clear_error() {
    for cmd in ["run", "bench", "perplexity", "serve"] {
        let mut args = vec![cmd, "no-such-model.gguf", "--device", "bogus"];
        if cmd == "perplexity" {
            args.extend(["-f", "no-such-file.txt"]);
        }
        let line = assert_one_line_error(&ferro(&args), "unknown device 'bogus'");
        assert!(line.contains("cpu, gpu or auto"), "{cmd}: {line}");
    }
}

/// Without any Vulkan driver, `gpu` fails with one line and `auto` runs on the CPU.
#[test]
fn no_adapter_gpu_fails_and_auto_uses_the_cpu() {
    let Some(model) = require_model(MODEL) else { return };
    let run = |device: &str| {
        Command::new(ferro_bin())
            .args([
                "run",
                model.to_str().unwrap(),
                "Hi",
                "--raw",
                "--temp",
                "0",
                "-n",
                "2",
                "-c",
                "32",
                "-v",
                "--device",
                device,
            ])
            .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
            .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
            .env("NODEVICE_SELECT", "1")
            .env_remove("FERRO_LOG")
            .output()
            .unwrap()
    };
    assert_one_line_error(&run("gpu"), "--device gpu: no usable GPU adapter");
    let out = run("auto");
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("on CPU ("), "{stderr}");
}

/// `ferro info` lists the adapters wgpu sees (lavapipe in CI), in text and JSON.
#[test]
fn info_lists_gpu_adapters() {
    if !gpu_tests() {
        return;
    }
    let j: Value = serde_json::from_str(&ok(&ferro(&["info", "--devices", "--json"]))).unwrap();
    let adapters = j["gpu_adapters"].as_array().expect("gpu_adapters");
    assert!(
        !adapters.is_empty(),
        "no adapter: install mesa-vulkan-drivers (lavapipe); {j}"
    );
    for a in adapters {
        for k in ["name", "backend", "device_type"] {
            assert!(!a[k].as_str().unwrap_or("").is_empty(), "{k} of {a}");
        }
        assert!(a["hardware"].is_boolean(), "{a}");
    }
    assert!(j["kernels"].is_string());
    let text = ok(&ferro(&["info", "--devices"]));
    let name = adapters[0]["name"].as_str().unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("gpu adapters") && l.contains(name)),
        "{text}"
    );
    // With a model, the same list follows the model's summary.
    if let Some(model) = require_model(MODEL) {
        let j: Value = serde_json::from_str(&ok(&ferro(&["info", model.to_str().unwrap(), "--json"]))).unwrap();
        assert_eq!(j["gpu_adapters"].as_array().map(Vec::len), Some(adapters.len()));
        assert_eq!(j["architecture"], "llama");
    }
}

/// `ferro serve --device gpu --parallel 4`: the GPU holds four KV cache slots; three
/// simultaneous greedy completions (decoded together, at different positions) each give the
/// CPU's text for that prompt alone; embeddings come from the GPU too.
#[test]
fn serve_on_the_gpu() {
    let Some(model) = require_model(MODEL) else { return };
    if !gpu_tests() {
        return;
    }
    let Some(server) = server_common::Server::start(&["--device", "gpu", "--parallel", "4"]) else {
        return;
    };
    let models = server.request("GET", "/v1/models", &[], None).json();
    let meta = &models["data"][0]["meta"];
    assert_eq!(meta["n_parallel"], 4, "{models}");
    assert!(meta["device"].as_str().unwrap().starts_with("GPU: "), "{models}");
    let prompts = [
        "The capital of France is",
        "Once upon a time, in a small village,",
        "1, 2, 3, 4,",
    ];
    let texts: Vec<String> = std::thread::scope(|sc| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let server = &server;
                sc.spawn(move || {
                    let body = serde_json::json!({
                        "model": "smollm2-135m-instruct",
                        "prompt": p,
                        "max_tokens": 4,
                        "temperature": 0,
                    });
                    let r = server.post("/v1/completions", &body.to_string());
                    assert_eq!(r.status, 200, "{}", r.body);
                    r.json()["choices"][0]["text"].as_str().unwrap().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (p, text) in prompts.iter().zip(&texts) {
        let cpu = run_prompt_json(&model, p, "cpu", "4");
        assert_eq!(text, cpu["text"].as_str().unwrap(), "prompt {p:?}");
    }
    let e = server.post(
        "/v1/embeddings",
        r#"{"model": "smollm2-135m-instruct", "input": "hello"}"#,
    );
    assert_eq!(e.status, 200, "{}", e.body);
    let v: Vec<f64> = e.json()["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(v.len(), 576, "SmolLM2's n_embd");
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "unit length, got {norm}");
}
