//! `ferro bench MODEL [-p 512] [-n 128] [-t THREADS] [-r 3] [--device cpu|gpu|auto] [--json]`:
//! prompt-processing and generation speed with llama-bench's method (see
//! `ferro_engine::bench`), printed as llama-bench's table or as JSON records.
//!
//! `ferro bench --membw [-t THREADS]` measures the memory read bandwidth instead; given with a
//! model (or `--membw-gbs X`), every tg row also shows the bound `weights_bytes / bandwidth`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ferro_engine::bench::{bound_tokens_per_second, model_size, Bench, Test, TestResult};
use ferro_engine::{Backend, Forward, ModelOptions};
use ferro_gguf::Gguf;
use serde_json::{json, Value};

use crate::commands::DeviceArgs;
use crate::store;

/// Buffer of the bandwidth measurement: large enough that no cache holds it.
const MEMBW_BYTES: usize = 1 << 30;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file or a store name (default: the default model; not needed with --membw alone).
    pub model: Option<String>,
    /// Prompt lengths to test (pp), comma-separated; 0 skips the test.
    #[arg(short = 'p', long = "n-prompt", value_delimiter = ',', default_value = "512")]
    pub n_prompt: Vec<usize>,
    /// Generation lengths to test (tg), comma-separated; 0 skips the test.
    #[arg(short = 'n', long = "n-gen", value_delimiter = ',', default_value = "128")]
    pub n_gen: Vec<usize>,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long = "threads", default_value_t = 0, value_parser = super::parse_threads)]
    pub threads: usize,
    /// Timed repetitions of each test (after one warm-up run).
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    pub reps: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Print a JSON array of records instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Measure the memory read bandwidth (alone, or before the model's tests to show the bound):
    /// a streaming read of a 1 GiB buffer, in huge pages where the system has them (as the
    /// packed weights are).
    #[arg(long)]
    pub membw: bool,
    /// Memory bandwidth in GB/s to compute the tg bound with (instead of measuring it).
    #[arg(long = "membw-gbs")]
    pub membw_gbs: Option<f64>,
    /// Sequences the tg tests also run decoded together, each in its own KV cache slot
    /// (comma-separated; 1 is the plain tg test): `tgNxP` rows give the aggregate tokens/s of P
    /// sequences generating N tokens each, as the server's continuous batching decodes them.
    #[arg(long = "parallel", value_delimiter = ',', default_value = "1")]
    pub parallel: Vec<usize>,
    /// Seed of the random token ids.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    args.device.device()?;
    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.threads
    };
    if let Some(x) = args.membw_gbs {
        if !(x.is_finite() && x > 0.0) {
            bail!("--membw-gbs must be a positive number of GB/s, not {x}");
        }
    }
    let membw_only = args.membw && args.model.is_none();
    let bandwidth = match args.membw_gbs {
        Some(x) => Some(x),
        None if args.membw => {
            eprintln!("measuring memory read bandwidth ({threads} threads, 1 GiB buffer) ...");
            Some(ferro_kernels::measure_read_bandwidth(threads, MEMBW_BYTES))
        }
        None => None,
    };
    if membw_only {
        let gbs = bandwidth.unwrap_or(0.0);
        if gbs <= 0.0 {
            bail!("could not measure the memory bandwidth with {threads} threads");
        }
        if args.json {
            let rec = json!([{
                "test": "membw",
                "threads": threads,
                "bytes": MEMBW_BYTES,
                "gb_per_second": gbs,
            }]);
            println!("{}", serde_json::to_string_pretty(&rec)?);
        } else {
            println!("memory read bandwidth: {gbs:.2} GB/s ({threads} threads, 1 GiB buffer, best pass)");
        }
        return Ok(());
    }

    let tests: Vec<Test> = args
        .n_prompt
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| Test::Prompt(n))
        .chain(args.n_gen.iter().filter(|&&n| n > 0).flat_map(|&n| {
            args.parallel
                .iter()
                .map(move |&p| if p == 1 { Test::Gen(n) } else { Test::Parallel(n, p) })
        }))
        .collect();
    if args.parallel.iter().any(|&p| p == 0 || p > 256) {
        bail!("--parallel takes 1 to 256 sequences");
    }
    if tests.is_empty() {
        bail!("nothing to measure: -p and -n are both 0");
    }
    if args.reps == 0 {
        bail!("-r must be at least 1");
    }
    let path = store::resolve_model(args.model.as_deref())?;
    let n_ctx = tests.iter().map(|t| t.n_ctx()).max().unwrap_or(1);
    let n_batch = args
        .n_prompt
        .iter()
        .copied()
        .chain(args.parallel.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1);
    let gguf = Arc::new(Gguf::open(&path).with_context(|| format!("cannot load {}", path.display()))?);
    let n_slots = tests.iter().map(|t| t.n_slots()).max().unwrap_or(1);
    let opts = ModelOptions {
        n_ctx,
        n_batch,
        threads,
        n_slots,
        ..ModelOptions::default()
    };
    let mut model = args
        .device
        .load(gguf, &opts)
        .with_context(|| format!("cannot load {}", path.display()))?;
    model.set_slots(n_slots)?;
    let info = ModelInfo::new(&model, &path);
    eprintln!("{}: running on {}", info.name, model.describe());
    let weight_bytes = model.weight_bytes();
    let mut bench = Bench::new(&mut model, args.seed);
    let mut rows = Vec::new();
    for test in tests {
        eprintln!("{}: {} x{} ...", info.name, test.name(), args.reps);
        let r = bench.run(test, args.reps)?;
        rows.push(r);
    }
    let bound = bandwidth.map(|gbs| (gbs, bound_tokens_per_second(weight_bytes, gbs)));
    if args.json {
        let recs: Vec<Value> = rows
            .iter()
            .map(|r| record(&info, threads, weight_bytes, bound, r))
            .collect();
        println!("{}", serde_json::to_string_pretty(&recs)?);
    } else {
        print_table(&info, threads, bound, &rows);
    }
    Ok(())
}

/// What the table says about the model and where it ran.
struct ModelInfo {
    /// File name without `.gguf`.
    name: String,
    /// "llama 134.5M Q4_1", as llama-bench's model type.
    desc: String,
    size_bytes: u64,
    params: u64,
    /// llama-bench's backend column: "CPU", "Vulkan", "Metal" ...
    backend: String,
    /// The adapter of a GPU run ("NVIDIA H100 PCIe"), empty on the CPU.
    gpu: String,
}

impl ModelInfo {
    fn new(model: &Backend, path: &Path) -> Self {
        let g = model.gguf();
        let (size_bytes, params) = model_size(g);
        let name = path
            .file_name()
            .map(|f| f.to_string_lossy().trim_end_matches(".gguf").to_string())
            .unwrap_or_default();
        let ftype = g.get_u64("general.file_type").and_then(file_type_name).unwrap_or("?");
        ModelInfo {
            name,
            desc: format!("{} {} {ftype}", model.hparams().arch_name, human_params(params)),
            size_bytes,
            params,
            backend: model.name(),
            gpu: match model {
                Backend::Gpu(g) => g.adapter().name,
                Backend::Cpu(_) => String::new(),
            },
        }
    }
}

/// llama.cpp's `llama_model_ftype_name` for the common `general.file_type` values.
fn file_type_name(ft: u64) -> Option<&'static str> {
    Some(match ft {
        0 => "all F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K - Medium",
        11 => "Q3_K - Small",
        12 => "Q3_K - Medium",
        13 => "Q3_K - Large",
        14 => "Q4_K - Small",
        15 => "Q4_K - Medium",
        16 => "Q5_K - Small",
        17 => "Q5_K - Medium",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

fn human_params(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} B", n / 1e9)
    } else {
        format!("{:.2} M", n / 1e6)
    }
}

fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.2} MiB", b / (1u64 << 20) as f64)
    }
}

fn record(info: &ModelInfo, threads: usize, weight_bytes: usize, bound: Option<(f64, f64)>, r: &TestResult) -> Value {
    let (n_prompt, n_gen) = match r.test {
        Test::Prompt(n) => (n, 0),
        Test::Gen(n) | Test::Parallel(n, _) => (0, n),
    };
    let mut rec = json!({
        "model": info.name,
        "model_type": info.desc,
        "size": info.size_bytes,
        "params": info.params,
        "backend": info.backend,
        "threads": threads,
        "test": r.test.name(),
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "n_parallel": r.test.n_slots(),
        "tokens_per_second": r.tokens_per_second(),
        "stddev": r.stddev(),
        "samples_ts": r.samples_ts(),
        "weights_bytes": weight_bytes,
    });
    if !info.gpu.is_empty() {
        rec["gpu"] = json!(info.gpu);
    }
    if let (Test::Gen(_), Some((gbs, bound_ts))) = (r.test, bound) {
        rec["membw_gb_per_second"] = json!(gbs);
        rec["bound_tokens_per_second"] = json!(bound_ts);
        rec["fraction_of_bound"] = json!(r.tokens_per_second() / bound_ts);
    }
    rec
}

fn print_table(info: &ModelInfo, threads: usize, bound: Option<(f64, f64)>, rows: &[TestResult]) {
    let mut header = vec!["model", "size", "params", "backend", "threads", "test", "t/s"];
    if bound.is_some() {
        header.extend(["bound t/s", "% of bound"]);
    }
    let mut table: Vec<Vec<String>> = Vec::new();
    for r in rows {
        let mut row = vec![
            info.desc.clone(),
            human_size(info.size_bytes),
            human_params(info.params),
            info.backend.clone(),
            threads.to_string(),
            r.test.name(),
            format!("{:.2} ± {:.2}", r.tokens_per_second(), r.stddev()),
        ];
        if let Some((_, b)) = bound {
            match r.test {
                Test::Gen(_) => row.extend([format!("{b:.2}"), format!("{:.1}", 100.0 * r.tokens_per_second() / b)]),
                // Parallel rows read each weight once per step for all their sequences.
                Test::Prompt(_) | Test::Parallel(..) => row.extend([String::new(), String::new()]),
            }
        }
        table.push(row);
    }
    // Text columns left-aligned, numbers right-aligned, as llama-bench.
    let right = |c: usize| !matches!(header[c], "model" | "backend" | "test");
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if right(c) {
                    format!("{s:>w$}", w = widths[c])
                } else {
                    format!("{s:<w$}", w = widths[c])
                }
            })
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    line(&header.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(c, &w)| {
            if right(c) {
                format!("{}:", "-".repeat(w + 1))
            } else {
                "-".repeat(w + 2)
            }
        })
        .collect();
    println!("|{}|", rule.join("|"));
    for row in &table {
        line(row);
    }
    if let Some((gbs, _)) = bound {
        println!("\nbound: weights read once per token at {gbs:.2} GB/s");
    }
}
