//! Tokenizers and chat templates on the real test models, against llama.cpp's outputs
//! (fixtures/tokenizer_reference.json, copied from the shared llama.cpp reference run), plus
//! synthetic vocabularies for the error paths and byte fallback.

use std::path::PathBuf;
use std::sync::OnceLock;

use ferro_engine::chat_template::{ChatMessage, ChatTemplate, TemplateSource};
use ferro_engine::tokenizer::{Tokenizer, TokenizerError};
use ferro_gguf::{Gguf, GgufWriter, MetaValue, ValueType};

const SMOLLM: &str = "smollm2-135m-instruct";
const GEMMA: &str = "gemma3-270m";

/// A model and its tokenizer, loaded once per test binary.
struct Loaded {
    gguf: Gguf,
    tok: Tokenizer,
}

fn loaded(name: &'static str) -> Option<&'static Loaded> {
    static SMOL: OnceLock<Option<Loaded>> = OnceLock::new();
    static GEM: OnceLock<Option<Loaded>> = OnceLock::new();
    let cell = if name == SMOLLM { &SMOL } else { &GEM };
    cell.get_or_init(|| {
        let gguf = open_model(name)?;
        let tok = Tokenizer::from_gguf(&gguf).expect("tokenizer loads");
        Some(Loaded { gguf, tok })
    })
    .as_ref()
}

/// Opens a model from the store; `None` only when FERRO_SKIP_MODEL_TESTS=1 and it is missing.
fn open_model(name: &str) -> Option<Gguf> {
    let home = std::env::var_os("FERRO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/ferro"));
    let path = home.join("models").join(format!("{name}.gguf"));
    if !path.exists() {
        if std::env::var("FERRO_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
            eprintln!("skipping: {} missing (FERRO_SKIP_MODEL_TESTS=1)", path.display());
            return None;
        }
        panic!(
            "test model {} is missing; run `ferro pull {name}` or set FERRO_SKIP_MODEL_TESTS=1",
            path.display()
        );
    }
    Some(Gguf::open(&path).expect("model opens"))
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    tokens: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct ModelRef {
    with_special: Vec<Case>,
    no_special: Vec<Case>,
}

fn reference(name: &str) -> ModelRef {
    let all: std::collections::HashMap<String, serde_json::Value> =
        serde_json::from_str(include_str!("fixtures/tokenizer_reference.json")).expect("fixture parses");
    serde_json::from_value(all[name].clone()).expect("fixture entry parses")
}

fn check_reference(name: &'static str) {
    let Some(Loaded { tok, .. }) = loaded(name) else {
        return;
    };
    let r = reference(name);
    let mut failures = Vec::new();
    for c in &r.with_special {
        let got = tok.encode(&c.text, true, true);
        if got != c.tokens {
            failures.push(format!("special {:?}\n  want {:?}\n  got  {:?}", c.text, c.tokens, got));
        }
    }
    for c in &r.no_special {
        let got = tok.encode(&c.text, false, false);
        if got != c.tokens {
            failures.push(format!(
                "no-special {:?}\n  want {:?}\n  got  {:?}",
                c.text, c.tokens, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(r.with_special.len() >= 3 && r.no_special.len() >= 10);

    // Every reference string survives encode -> decode.
    for c in r.no_special.iter().chain(&r.with_special) {
        let ids = tok.encode(&c.text, false, false);
        assert_eq!(tok.decode(&ids), c.text, "{name} round trip");
        let ids = tok.encode(&c.text, false, true);
        assert_eq!(tok.decode(&ids), c.text, "{name} round trip with specials");
    }
}

#[test]
fn smollm_tokenizes_like_llama_cpp() {
    check_reference(SMOLLM);
}

#[test]
fn gemma_tokenizes_like_llama_cpp() {
    check_reference(GEMMA);
}

#[test]
fn special_token_ids_from_metadata() {
    if let Some(Loaded { tok, .. }) = loaded(SMOLLM) {
        assert_eq!(tok.vocab_size(), 49152);
        assert_eq!(tok.bos_id(), Some(1));
        assert_eq!(tok.eos_id(), Some(2));
        assert!(!tok.add_bos());
        let im_end = tok.token_id("<|im_end|>").unwrap();
        assert!(tok.is_eog(im_end));
        assert!(tok.is_eog(tok.token_id("<|endoftext|>").unwrap()));
        assert!(!tok.is_eog(tok.token_id("<|im_start|>").unwrap()));
        assert_eq!(tok.token_str(im_end).unwrap(), "<|im_end|>");
        assert_eq!(tok.token_to_piece(tok.token_id("Ġworld").unwrap()), b" world");
        // Specials are only parsed when asked.
        assert_eq!(tok.encode("<|im_start|>", false, true), [1]);
        assert!(tok.encode("<|im_start|>", false, false).len() > 1);
        assert!(tok.token_str(49152).is_none());
        assert_eq!(tok.token_to_piece(u32::MAX), b"");
    }
    if let Some(Loaded { tok, .. }) = loaded(GEMMA) {
        assert_eq!(tok.vocab_size(), 262144);
        assert_eq!(tok.bos_id(), Some(2));
        assert_eq!(tok.eos_id(), Some(1));
        assert!(tok.add_bos());
        assert_eq!(tok.encode("", true, true), [2]);
        assert!(tok.encode("", false, true).is_empty());
        let eot = tok.token_id("<end_of_turn>").unwrap();
        assert!(tok.is_eog(eot) && tok.is_eog(1));
        assert_eq!(tok.eot_id(), Some(eot));
        assert_eq!(tok.token_to_piece(tok.token_id("<0x41>").unwrap()), b"A");
        assert_eq!(tok.token_to_piece(tok.token_id("▁world").unwrap()), b" world");
        let ids = tok.encode("<start_of_turn>user\nhi<end_of_turn>\n", true, true);
        assert_eq!(ids[..2], [2, tok.token_id("<start_of_turn>").unwrap()]);
        assert!(ids.contains(&eot));
    }
}

/// Streams `text`'s tokens one at a time: no piece may hold a broken character, and the
/// pieces must add up to the text.
fn check_streaming(tok: &Tokenizer, text: &str) -> bool {
    let ids = tok.encode(text, false, false);
    let mut d = tok.detokenizer();
    let mut out = String::new();
    let mut held_back = false;
    for &id in &ids {
        let piece = d.push(id);
        assert!(!piece.contains('\u{FFFD}'), "broken sequence in {piece:?}");
        held_back |= !d.pending_bytes().is_empty();
        out.push_str(&piece);
    }
    out.push_str(&d.flush());
    assert_eq!(out, text);
    held_back
}

#[test]
fn streaming_detokenizer_never_splits_characters() {
    let texts = ["emoji 🦀🔥 mix", "日本語のテキストと中文", "naïve 👩‍👩‍👧 𝔘𝔫𝔦𝔠𝔬𝔡𝔢"];
    for name in [SMOLLM, GEMMA] {
        let Some(Loaded { tok, .. }) = loaded(name) else {
            continue;
        };
        let mut any_held = false;
        for t in texts {
            any_held |= check_streaming(tok, t);
        }
        // Both tokenizers split some of these characters over several byte tokens.
        assert!(any_held, "{name}: expected some multi-token characters");
    }
}

#[test]
fn smollm_chat_template_renders_reference_prompt() {
    let Some(Loaded { gguf, tok }) = loaded(SMOLLM) else {
        return;
    };
    let t = ChatTemplate::from_gguf(gguf, tok).unwrap();
    assert_eq!(t.source(), TemplateSource::Model);
    let msgs = [
        ChatMessage::system("You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
        ChatMessage::user("What is the boiling point of water?"),
    ];
    let rendered = t.render(&msgs, true).unwrap();
    let r = reference(SMOLLM);
    let chatml = r
        .with_special
        .iter()
        .find(|c| c.text.starts_with("<|im_start|>"))
        .expect("a ChatML reference prompt");
    assert_eq!(rendered, chatml.text);
    assert_eq!(tok.encode(&rendered, true, true), chatml.tokens);

    // The template adds the default system prompt when none is given; tool messages render.
    let rendered = t
        .render(&[ChatMessage::user("2+2?"), ChatMessage::tool("4", "call_0")], false)
        .unwrap();
    assert!(rendered.starts_with("<|im_start|>system\nYou are a helpful AI assistant"));
    assert!(rendered.ends_with("<|im_start|>tool\n4<|im_end|>\n"));
}

#[test]
fn gemma_without_template_uses_gemma_format() {
    let Some(Loaded { gguf, tok }) = loaded(GEMMA) else {
        return;
    };
    let t = ChatTemplate::from_gguf(gguf, tok).unwrap();
    assert_eq!(t.source(), TemplateSource::GemmaFallback);
    let s = t.render(&[ChatMessage::user("Hello")], true).unwrap();
    assert_eq!(s, "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n");
}

// ---- synthetic vocabularies ----

fn strings(v: &[&str]) -> MetaValue {
    MetaValue::strings(v.iter().copied())
}

fn gguf(meta: Vec<(&str, MetaValue)>) -> Gguf {
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.set(k, v).unwrap();
    }
    Gguf::from_bytes(w.to_bytes().unwrap()).unwrap()
}

#[test]
fn missing_or_unknown_metadata_is_a_typed_error() {
    let g = gguf(vec![("tokenizer.ggml.model", MetaValue::String("llama".into()))]);
    assert!(matches!(
        Tokenizer::from_gguf(&g),
        Err(TokenizerError::MissingKey("tokenizer.ggml.tokens"))
    ));
    let g = gguf(vec![("tokenizer.ggml.tokens", strings(&["a"]))]);
    assert!(matches!(
        Tokenizer::from_gguf(&g),
        Err(TokenizerError::MissingKey("tokenizer.ggml.model"))
    ));
    let g = gguf(vec![
        ("tokenizer.ggml.model", MetaValue::String("rwkv".into())),
        ("tokenizer.ggml.tokens", strings(&["a"])),
    ]);
    assert!(matches!(
        Tokenizer::from_gguf(&g),
        Err(TokenizerError::UnknownModel(m)) if m == "rwkv"
    ));
    let g = gguf(vec![
        ("tokenizer.ggml.model", MetaValue::String("gpt2".into())),
        ("tokenizer.ggml.pre", MetaValue::String("nonsense".into())),
        ("tokenizer.ggml.tokens", strings(&["a"])),
        ("tokenizer.ggml.merges", strings(&[])),
    ]);
    assert!(matches!(
        Tokenizer::from_gguf(&g),
        Err(TokenizerError::UnknownPreTokenizer(_))
    ));
    let g = gguf(vec![
        ("tokenizer.ggml.model", MetaValue::String("gpt2".into())),
        ("tokenizer.ggml.tokens", strings(&["a"])),
    ]);
    assert!(matches!(
        Tokenizer::from_gguf(&g),
        Err(TokenizerError::MissingKey("tokenizer.ggml.merges"))
    ));
    let g = gguf(vec![
        ("tokenizer.ggml.model", MetaValue::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&["a", "b"])),
        (
            "tokenizer.ggml.scores",
            MetaValue::Array(ValueType::F32, vec![MetaValue::F32(0.0)]),
        ),
    ]);
    assert!(matches!(
        Tokenizer::from_gguf(&g),
        Err(TokenizerError::LengthMismatch { .. })
    ));
    let err = Tokenizer::from_gguf(&gguf(vec![])).unwrap_err();
    assert!(err.to_string().contains("tokenizer.ggml.model"));
}

/// A tiny SentencePiece vocabulary: 3 specials, 256 byte tokens, a few pieces.
fn tiny_spm(add_space_prefix: bool) -> Tokenizer {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u32 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let pieces = [
        ("▁", -1.0),
        ("a", -2.0),
        ("b", -2.0),
        ("ab", -1.5),
        ("▁ab", -0.5),
        ("▁a", -3.0),
    ];
    let mut scores = vec![0.0f32; tokens.len()];
    for (p, s) in pieces {
        tokens.push(p.into());
        types.push(1);
        scores.push(s);
    }
    let g = gguf(vec![
        ("tokenizer.ggml.model", MetaValue::String("llama".into())),
        ("tokenizer.ggml.tokens", MetaValue::strings(tokens.iter().cloned())),
        (
            "tokenizer.ggml.scores",
            MetaValue::Array(ValueType::F32, scores.into_iter().map(MetaValue::F32).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            MetaValue::Array(ValueType::I32, types.into_iter().map(MetaValue::I32).collect()),
        ),
        ("tokenizer.ggml.add_space_prefix", MetaValue::Bool(add_space_prefix)),
    ]);
    Tokenizer::from_gguf(&g).unwrap()
}

#[test]
fn spm_merges_by_score_and_falls_back_to_bytes() {
    let tok = tiny_spm(true);
    let id = |t: &str| tok.token_id(t).unwrap();
    // Defaults when the metadata names no BOS/EOS: 1 and 2, BOS added.
    assert_eq!(tok.bos_id(), Some(1));
    let ids = tok.encode("ab ☃", true, false);
    // "▁ab▁☃": "▁ab" (score -0.5) wins, then "▁" and the snowman's three UTF-8 bytes.
    assert_eq!(ids, [1, id("▁ab"), id("▁"), id("<0xE2>"), id("<0x98>"), id("<0x83>")]);
    // The added space prefix is removed again when decoding.
    assert_eq!(tok.decode(&ids[1..]), "ab ☃");
    // Special texts: control tokens only with parse_special.
    assert_eq!(tok.encode("a</s>", false, true), [id("▁a"), 2]);
    assert_eq!(tok.encode("a</s>", false, false)[0], id("▁a"));

    let tok = tiny_spm(false);
    let id = |t: &str| tok.token_id(t).unwrap();
    assert_eq!(tok.encode("ab", false, false), [id("ab")]);
}
