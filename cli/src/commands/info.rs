//! `ferro info MODEL [--json]`: what a GGUF file holds and how ferro would run it: the CPU
//! kernels chosen and the GPU adapters wgpu sees. `ferro info --devices` shows only the latter.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use ferro_engine::backend::{is_hardware, list_adapters, AdapterSummary};
use ferro_gguf::{Gguf, GgufError, Value};
use serde_json::{json, Map, Value as Json};

use crate::commands::list::human_bytes;
use crate::store;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file or a store name (default: the default model).
    pub model: Option<String>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Show only the CPU kernels and the GPU adapters (no model needed).
    #[arg(long)]
    pub devices: bool,
}

/// Longest string shown in full; longer ones are cut and their length given.
const MAX_STRING: usize = 200;

pub fn run(args: Args) -> Result<()> {
    if args.devices {
        let info = devices_json(&list_adapters());
        if args.json {
            println!("{}", serde_json::to_string_pretty(&info)?);
        } else {
            print_devices(&info);
        }
        return Ok(());
    }
    let path = store::resolve_model(args.model.as_deref())?;
    let g = match Gguf::open(&path) {
        Ok(g) => g,
        // These already name the path.
        Err(e @ (GgufError::Open { .. } | GgufError::IsDirectory { .. })) => return Err(e.into()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut info = summarize(&g, &path);
    if let (Json::Object(m), Json::Object(d)) = (&mut info, devices_json(&list_adapters())) {
        m.extend(d);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print_human(&info, &g);
    }
    Ok(())
}

/// The `--json` object.
fn summarize(g: &Gguf, path: &Path) -> Json {
    let arch = g.get_str("general.architecture").unwrap_or("unknown").to_string();
    let hp = |k: &str| g.get_u64(&format!("{arch}.{k}"));
    let vocab_size = hp("vocab_size").or_else(|| g.get_array("tokenizer.ggml.tokens").map(|a| a.len));
    let mut types: BTreeMap<&str, u64> = BTreeMap::new();
    for t in g.tensors() {
        *types.entry(t.ty.name()).or_default() += 1;
    }
    let mut metadata = Map::new();
    for (k, v) in g.metadata() {
        metadata.insert(k.to_string(), meta_json(v));
    }
    json!({
        "path": path.display().to_string(),
        "architecture": arch,
        "name": g.get_str("general.name"),
        "gguf_version": g.version,
        "file_bytes": g.file_size(),
        "n_params": g.n_elements(),
        "n_tensors": g.tensors().len(),
        "tensor_types": types,
        "context_length": hp("context_length"),
        "embedding_length": hp("embedding_length"),
        "block_count": hp("block_count"),
        "feed_forward_length": hp("feed_forward_length"),
        "head_count": hp("attention.head_count"),
        "head_count_kv": hp("attention.head_count_kv"),
        "vocab_size": vocab_size,
        "tokenizer": g.get_str("tokenizer.ggml.model"),
        "chat_template": g.get("tokenizer.chat_template").is_some(),
        "alignment": g.alignment,
        "metadata": metadata,
    })
}

/// Scalars as JSON values, strings cut to MAX_STRING characters, arrays by type and length.
fn meta_json(v: Value<'_>) -> Json {
    match v {
        Value::String(s) => {
            let text = String::from_utf8_lossy(s);
            if text.chars().count() > MAX_STRING {
                let cut: String = text.chars().take(MAX_STRING).collect();
                Json::String(format!("{cut}… ({} bytes)", s.len()))
            } else {
                Json::String(text.into_owned())
            }
        }
        Value::Array(a) => json!({ "type": "array", "elem_type": a.elem_type.name(), "len": a.len }),
        Value::Bool(b) => Json::Bool(b),
        Value::F32(x) => json!(x as f64),
        Value::F64(x) => json!(x),
        Value::I8(_) | Value::I16(_) | Value::I32(_) | Value::I64(_) => json!(v.as_i64()),
        Value::U8(_) | Value::U16(_) | Value::U32(_) | Value::U64(_) => json!(v.as_u64()),
    }
}

fn print_human(info: &Json, g: &Gguf) {
    let s = |k: &str| match &info[k] {
        Json::Null => "-".to_string(),
        Json::String(s) => s.clone(),
        v => v.to_string(),
    };
    let n_params = info["n_params"].as_u64().unwrap_or(0);
    let types: Vec<String> = info["tensor_types"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k} {v}")).collect())
        .unwrap_or_default();
    let rows = [
        ("file", format!("{} ({})", s("path"), human_bytes(g.file_size()))),
        ("architecture", s("architecture")),
        ("name", s("name")),
        ("parameters", format!("{} ({n_params})", human_count(n_params))),
        ("context length", s("context_length")),
        ("embedding length", s("embedding_length")),
        ("blocks", s("block_count")),
        ("feed-forward length", s("feed_forward_length")),
        (
            "attention heads",
            format!("{} (kv {})", s("head_count"), s("head_count_kv")),
        ),
        (
            "vocabulary",
            format!("{} ({} tokenizer)", s("vocab_size"), s("tokenizer")),
        ),
        (
            "chat template",
            if info["chat_template"] == true {
                "yes".into()
            } else {
                "no".into()
            },
        ),
        ("tensors", format!("{}: {}", g.tensors().len(), types.join(", "))),
        (
            "gguf",
            format!(
                "v{}, {} metadata keys, alignment {}, data at byte {}",
                g.version,
                g.keys().count(),
                g.alignment,
                g.data_offset
            ),
        ),
    ];
    for (k, v) in rows {
        println!("{k:<20} {v}");
    }
    print_devices(info);
}

/// `cpu_features`, `kernels`, `huge_pages` (the transparent huge page mode) and `gpu_adapters`
/// (name, backend, device_type, driver, and whether `--device auto` would use it).
fn devices_json(adapters: &[AdapterSummary]) -> Json {
    let list: Vec<Json> = adapters
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "backend": a.backend,
                "device_type": a.device_type,
                "driver": a.driver,
                "driver_info": a.driver_info,
                "hardware": is_hardware(a),
            })
        })
        .collect();
    json!({
        "cpu_features": ferro_kernels::cpu_features(),
        "kernels": ferro_kernels::kernel_path(),
        "huge_pages": ferro_kernels::transparent_huge_pages(),
        "gpu_adapters": list,
    })
}

fn print_devices(info: &Json) {
    let features: Vec<&str> = info["cpu_features"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    println!("{:<20} {}", "cpu features", features.join(" "));
    println!("{:<20} {}", "kernels", info["kernels"].as_str().unwrap_or("-"));
    let pages = match info["huge_pages"].as_str() {
        Some(m @ ("always" | "madvise")) => format!("{m} (the packed weights are in transparent huge pages)"),
        Some(m) => format!("{m} (the packed weights are in 4 KiB pages: decode is slower)"),
        None => "unknown (the packed weights are in the system's default pages)".into(),
    };
    println!("{:<20} {pages}", "huge pages");
    let adapters = info["gpu_adapters"].as_array().cloned().unwrap_or_default();
    if adapters.is_empty() {
        println!("{:<20} none (no Vulkan, Metal or DX12 driver found)", "gpu adapters");
    }
    for (i, a) in adapters.iter().enumerate() {
        let s = |k: &str| a[k].as_str().unwrap_or("").to_string();
        let mut line = format!("{} ({}, {}", s("name"), s("backend"), s("device_type"));
        if !s("driver").is_empty() {
            line.push_str(format!(", {} {}", s("driver"), s("driver_info")).trim_end());
        }
        line.push(')');
        if a["hardware"] != true {
            line.push_str(" [software: --device auto skips it]");
        }
        println!("{:<20} {line}", if i == 0 { "gpu adapters" } else { "" });
    }
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}
