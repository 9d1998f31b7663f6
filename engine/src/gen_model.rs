//! Synthetic models: GGUF files with the real shapes of an architecture, random quantized
//! weights and a real tokenizer copied from another model, for tests and benchmarks of
//! architectures (and sizes) no small real model exists for.
//!
//! Weights are random blocks written directly in their quantized form (random quants, scales
//! chosen so each layer keeps activations near unit variance), streamed to disk, so even the
//! 8B shape is written in about the time the disk needs.

use std::io::Write;
use std::path::Path;

use ferro_gguf::{GgmlType, Gguf, GgufError, GgufWriter, MetaValue, TensorSpec};
use half::f16;

/// Architectures [`generate_model`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenArch {
    Llama,
    Mistral,
    Qwen2,
    Phi3,
    Gemma3,
}

impl GenArch {
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "llama" => Self::Llama,
            "mistral" => Self::Mistral,
            "qwen2" => Self::Qwen2,
            "phi3" => Self::Phi3,
            "gemma3" => Self::Gemma3,
            _ => return None,
        })
    }

    /// `general.architecture` (mistral files are llama files).
    pub fn gguf_arch(self) -> &'static str {
        match self {
            Self::Llama | Self::Mistral => "llama",
            Self::Qwen2 => "qwen2",
            Self::Phi3 => "phi3",
            Self::Gemma3 => "gemma3",
        }
    }
}

/// Model sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenShape {
    /// 2 layers of width 256: loads and runs in milliseconds.
    Tiny,
    /// Llama-3.2-1B dimensions.
    OneB,
    /// Llama-3-8B dimensions.
    EightB,
}

impl GenShape {
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "tiny" => Self::Tiny,
            "1b" => Self::OneB,
            "8b" => Self::EightB,
            _ => return None,
        })
    }
}

/// Quantization mixes, as llama-quantize names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenQuant {
    Q4_0,
    /// Q4_K, with Q6_K for attn_v, ffn_down and the output matrix.
    Q4KM,
    Q8_0,
}

impl GenQuant {
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "q4_0" => Self::Q4_0,
            "q4_k_m" => Self::Q4KM,
            "q8_0" => Self::Q8_0,
            _ => return None,
        })
    }

    /// llama.cpp `general.file_type`.
    fn file_type(self) -> u32 {
        match self {
            Self::Q4_0 => 2,
            Self::Q8_0 => 7,
            Self::Q4KM => 15,
        }
    }

    fn main_type(self) -> GgmlType {
        match self {
            Self::Q4_0 => GgmlType::Q4_0,
            Self::Q8_0 => GgmlType::Q8_0,
            Self::Q4KM => GgmlType::Q4_K,
        }
    }

    fn sensitive_type(self) -> GgmlType {
        match self {
            Self::Q4KM => GgmlType::Q6_K,
            q => q.main_type(),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct GenOptions {
    pub arch: GenArch,
    pub shape: GenShape,
    pub quant: GenQuant,
    pub seed: u64,
}

/// Dimensions of a generated model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenDims {
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    pub n_ctx: usize,
}

/// Errors of [`generate_model`].
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("the tokenizer source has no tokenizer metadata (tokenizer.ggml.tokens)")]
    NoTokenizer,
}

/// The dimensions of `shape` for `arch` with a vocabulary of `n_vocab`.
pub fn dims(arch: GenArch, shape: GenShape, n_vocab: usize) -> GenDims {
    let (n_embd, n_layer, n_head, n_head_kv, n_ff) = match shape {
        GenShape::Tiny => (256, 2, 4, 2, 512),
        GenShape::OneB => (2048, 16, 32, 8, 8192),
        GenShape::EightB => (4096, 32, 32, 8, 14336),
    };
    let _ = arch;
    GenDims {
        n_embd,
        n_layer,
        n_head,
        n_head_kv,
        head_dim: n_embd / n_head,
        n_ff,
        n_vocab,
        n_ctx: if shape == GenShape::Tiny { 2048 } else { 8192 },
    }
}

/// SplitMix64: fast, seedable, good enough for random weights.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Random blocks of `ty` for a `[rows x cols]` matrix with weights of standard deviation
/// about `1/sqrt(cols)`: random quants, the block scales set to fit.
fn write_random_matrix(
    rng: &mut Rng,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    w: &mut dyn Write,
) -> std::io::Result<()> {
    let bs = ty.block_size() as usize;
    let ts = ty.type_size() as usize;
    let blocks_per_row = cols / bs;
    let target = 1.0 / (cols as f32).sqrt();
    // Standard deviation of the stored quants times the scales, per type:
    //   q4_0: d*(q-8), q uniform 0..15 -> sd 4.6 d; q8_0: d*q, q uniform i8 -> sd 74 d;
    //   q4_k: d*sc*q - dmin*m, sc,q ~ 32, 7.5 -> sd ~ 170 d; q6_k: d*sc*(q-32), sc ~ 64 (i8) -> sd ~ 1400 d.
    let (d, dmin) = match ty {
        GgmlType::Q4_0 => (target / 4.6, 0.0),
        GgmlType::Q8_0 => (target / 74.0, 0.0),
        GgmlType::Q4_K => (target / 170.0, target / 170.0 * 7.5),
        GgmlType::Q6_K => (target / 1400.0, 0.0),
        _ => (target, 0.0),
    };
    let d = f16::from_f32(d).to_le_bytes();
    let dmin = f16::from_f32(dmin).to_le_bytes();
    let mut row = vec![0u8; blocks_per_row * ts];
    for _ in 0..rows {
        rng.fill(&mut row);
        for b in row.chunks_exact_mut(ts) {
            match ty {
                GgmlType::Q4_0 | GgmlType::Q8_0 => b[..2].copy_from_slice(&d),
                GgmlType::Q4_K => {
                    b[..2].copy_from_slice(&d);
                    b[2..4].copy_from_slice(&dmin);
                }
                GgmlType::Q6_K => b[ts - 2..].copy_from_slice(&d),
                _ => unreachable!("generator types are q4_0, q8_0, q4_k, q6_k"),
            }
        }
        w.write_all(&row)?;
    }
    Ok(())
}

/// One tensor of the generated file.
struct Planned {
    spec: TensorSpec,
    /// None: an f32 vector of ones plus small noise (norms) or small noise (biases).
    matrix: bool,
    bias: bool,
}

fn plan(arch: GenArch, quant: GenQuant, d: &GenDims) -> Vec<Planned> {
    let (e, ff, v) = (d.n_embd as u64, d.n_ff as u64, d.n_vocab as u64);
    let hd = d.head_dim as u64;
    let (qd, kd) = (d.n_head as u64 * hd, d.n_head_kv as u64 * hd);
    let main = quant.main_type();
    let sens = quant.sensitive_type();
    let mut out = Vec::new();
    let mut push = |name: String, dims: Vec<u64>, ty: GgmlType, matrix: bool, bias: bool| {
        out.push(Planned {
            spec: TensorSpec { name, dims, ty },
            matrix,
            bias,
        })
    };
    let mat = |dims: [u64; 2]| dims.to_vec();
    push("token_embd.weight".into(), mat([e, v]), main, true, false);
    for il in 0..d.n_layer {
        let p = format!("blk.{il}");
        push(format!("{p}.attn_norm.weight"), vec![e], GgmlType::F32, false, false);
        if arch == GenArch::Phi3 {
            push(format!("{p}.attn_qkv.weight"), mat([e, qd + 2 * kd]), main, true, false);
        } else {
            push(format!("{p}.attn_q.weight"), mat([e, qd]), main, true, false);
            push(format!("{p}.attn_k.weight"), mat([e, kd]), main, true, false);
            push(format!("{p}.attn_v.weight"), mat([e, kd]), sens, true, false);
        }
        if arch == GenArch::Qwen2 {
            push(format!("{p}.attn_q.bias"), vec![qd], GgmlType::F32, false, true);
            push(format!("{p}.attn_k.bias"), vec![kd], GgmlType::F32, false, true);
            push(format!("{p}.attn_v.bias"), vec![kd], GgmlType::F32, false, true);
        }
        if arch == GenArch::Gemma3 {
            push(format!("{p}.attn_q_norm.weight"), vec![hd], GgmlType::F32, false, false);
            push(format!("{p}.attn_k_norm.weight"), vec![hd], GgmlType::F32, false, false);
        }
        push(format!("{p}.attn_output.weight"), mat([qd, e]), main, true, false);
        if arch == GenArch::Gemma3 {
            push(
                format!("{p}.post_attention_norm.weight"),
                vec![e],
                GgmlType::F32,
                false,
                false,
            );
        }
        push(format!("{p}.ffn_norm.weight"), vec![e], GgmlType::F32, false, false);
        if arch == GenArch::Phi3 {
            push(format!("{p}.ffn_up.weight"), mat([e, 2 * ff]), main, true, false);
        } else {
            push(format!("{p}.ffn_gate.weight"), mat([e, ff]), main, true, false);
            push(format!("{p}.ffn_up.weight"), mat([e, ff]), main, true, false);
        }
        push(format!("{p}.ffn_down.weight"), mat([ff, e]), sens, true, false);
        if arch == GenArch::Gemma3 {
            push(
                format!("{p}.post_ffw_norm.weight"),
                vec![e],
                GgmlType::F32,
                false,
                false,
            );
        }
    }
    push("output_norm.weight".into(), vec![e], GgmlType::F32, false, false);
    // qwen2 (small sizes) and gemma3 tie the output matrix to the embeddings.
    if !matches!(arch, GenArch::Qwen2 | GenArch::Gemma3) {
        push("output.weight".into(), mat([e, v]), sens, true, false);
    }
    out
}

/// Write a synthetic model to `out` (atomically), its tokenizer copied from `tokenizer_src`.
/// Returns the dimensions used (the vocabulary is the tokenizer's).
pub fn generate_model(opts: &GenOptions, tokenizer_src: &Gguf, out: &Path) -> Result<GenDims, GenError> {
    let tokens = tokenizer_src
        .get_array("tokenizer.ggml.tokens")
        .ok_or(GenError::NoTokenizer)?;
    let d = dims(opts.arch, opts.shape, tokens.len as usize);
    let a = opts.arch.gguf_arch();
    let mut w = GgufWriter::new();
    let u32v = |x: usize| MetaValue::U32(x as u32);
    w.set("general.architecture", MetaValue::String(a.into()))?;
    // No architecture in the name: llama.cpp sets token attributes by model name, and a name
    // containing "phi3" makes it look up "</s>", which the copied vocabulary may lack.
    w.set(
        "general.name",
        MetaValue::String(format!("ferro synthetic {:?} {:?}", opts.shape, opts.quant)),
    )?;
    w.set("general.file_type", MetaValue::U32(opts.quant.file_type()))?;
    w.set("general.quantization_version", MetaValue::U32(2))?;
    w.set(format!("{a}.context_length"), u32v(d.n_ctx))?;
    w.set(format!("{a}.embedding_length"), u32v(d.n_embd))?;
    w.set(format!("{a}.block_count"), u32v(d.n_layer))?;
    w.set(format!("{a}.feed_forward_length"), u32v(d.n_ff))?;
    w.set(format!("{a}.attention.head_count"), u32v(d.n_head))?;
    w.set(format!("{a}.attention.head_count_kv"), u32v(d.n_head_kv))?;
    w.set(format!("{a}.rope.dimension_count"), u32v(d.head_dim))?;
    let (eps, base) = match opts.arch {
        GenArch::Llama => (1e-5, 500000.0),
        GenArch::Mistral => (1e-5, 1000000.0),
        GenArch::Qwen2 => (1e-6, 1000000.0),
        GenArch::Phi3 => (1e-5, 10000.0),
        GenArch::Gemma3 => (1e-6, 1000000.0),
    };
    w.set(format!("{a}.attention.layer_norm_rms_epsilon"), MetaValue::F32(eps))?;
    w.set(format!("{a}.rope.freq_base"), MetaValue::F32(base))?;
    if opts.arch == GenArch::Gemma3 {
        w.set(format!("{a}.attention.key_length"), u32v(d.head_dim))?;
        w.set(format!("{a}.attention.value_length"), u32v(d.head_dim))?;
        w.set(format!("{a}.attention.sliding_window"), u32v(512))?;
    }
    for (k, v) in tokenizer_src.metadata() {
        if k.starts_with("tokenizer.") {
            w.set(k, MetaValue::from_value(v))?;
        }
    }
    let planned = plan(opts.arch, opts.quant, &d);
    let specs: Vec<TensorSpec> = planned.iter().map(|p| p.spec.clone()).collect();
    let mut rng = Rng(opts.seed ^ 0x6665_7272_6f00_0000);
    w.write_file_streaming(out, &specs, |i, spec, out| {
        let p = &planned[i];
        if p.matrix {
            let cols = spec.dims[0] as usize;
            let rows = spec.dims[1..].iter().product::<u64>() as usize;
            write_random_matrix(&mut rng, spec.ty, rows, cols, out)
        } else {
            let n = spec.dims[0] as usize;
            let mut bytes = Vec::with_capacity(n * 4);
            for _ in 0..n {
                let noise = 0.1 * rng.unit();
                let v = if p.bias { noise } else { 1.0 + noise };
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            out.write_all(&bytes)
        }
    })?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Logits, Model, ModelOptions};

    /// A file with nothing but a small tokenizer, as the source to copy.
    fn tokenizer_source(dir: &Path) -> Gguf {
        let mut w = GgufWriter::new();
        w.set("general.architecture", MetaValue::String("llama".into()))
            .unwrap();
        w.set("tokenizer.ggml.model", MetaValue::String("gpt2".into())).unwrap();
        w.set(
            "tokenizer.ggml.tokens",
            MetaValue::strings((0..300).map(|i| format!("t{i}"))),
        )
        .unwrap();
        let p = dir.join("tok.gguf");
        w.write_file(&p).unwrap();
        Gguf::open(&p).unwrap()
    }

    #[test]
    fn tiny_models_of_every_arch_load_and_run_without_nan() {
        let dir = std::env::temp_dir().join(format!("ferro-gen-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = tokenizer_source(&dir);
        for arch in [
            GenArch::Llama,
            GenArch::Mistral,
            GenArch::Qwen2,
            GenArch::Phi3,
            GenArch::Gemma3,
        ] {
            for quant in [GenQuant::Q4_0, GenQuant::Q8_0] {
                let out = dir.join(format!("{arch:?}-{quant:?}.gguf"));
                let opts = GenOptions {
                    arch,
                    shape: GenShape::Tiny,
                    quant,
                    seed: 7,
                };
                let d = generate_model(&opts, &src, &out).unwrap();
                assert_eq!(d.n_vocab, 300);
                let g = Gguf::open(&out).unwrap();
                assert_eq!(g.get_array("tokenizer.ggml.tokens").unwrap().len, 300);
                let mut m = Model::load(
                    &out,
                    &ModelOptions {
                        n_ctx: 64,
                        n_batch: 8,
                        threads: 1,
                        ..ModelOptions::default()
                    },
                )
                .unwrap();
                let logits = m.forward(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0, Logits::All).unwrap();
                assert_eq!(logits.len(), 10 * 300);
                assert!(logits.iter().all(|v| v.is_finite()), "{arch:?} {quant:?}");
                let spread = logits.iter().fold(0f32, |a, &v| a.max(v.abs()));
                assert!(spread > 1e-3, "{arch:?} {quant:?}: logits are all zero");
                // Batched and one-by-one evaluation agree.
                let last = logits[9 * 300..].to_vec();
                for (i, t) in (1..=10u32).enumerate() {
                    m.forward(&[t], i, Logits::Last).unwrap();
                }
                let one = m.forward(&[10], 9, Logits::Last).unwrap();
                let diff = one.iter().zip(&last).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
                assert!(
                    diff < 1e-2 * (1.0 + spread),
                    "{arch:?} {quant:?}: batch vs single {diff}"
                );
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
