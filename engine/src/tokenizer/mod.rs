//! Tokenizers built from GGUF metadata, following llama.cpp's `llama-vocab.cpp`:
//! SentencePiece-style (`tokenizer.ggml.model = "llama"`, [`spm`]) and GPT-2 byte-level BPE
//! (`"gpt2"`, [`bpe`] after the [`pretokenize`] regex split). Special tokens are cut out of the
//! text first (`tokenizer_st_partition`), longest token text first.

mod bpe;
mod pretokenize;
mod spm;
mod strtab;

use std::collections::HashMap;

use aho_corasick::AhoCorasick;
use ferro_gguf::Gguf;

use pretokenize::PreTokenizer;
pub use pretokenize::PreTokenizerKind;
use strtab::{StrIndex, StrTable};

/// Why a tokenizer could not be built from a model's metadata.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("missing tokenizer metadata `{0}`")]
    MissingKey(&'static str),
    #[error("tokenizer metadata `{key}` should be {expected}")]
    WrongType { key: &'static str, expected: &'static str },
    #[error("unknown tokenizer model `{0}` (ferro supports `llama` and `gpt2`)")]
    UnknownModel(String),
    #[error("unknown BPE pre-tokenizer `{0}` in tokenizer.ggml.pre")]
    UnknownPreTokenizer(String),
    #[error("`{key}` has {got} entries but the vocabulary has {expected} tokens")]
    LengthMismatch {
        key: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("the vocabulary is empty")]
    EmptyVocab,
    #[error("merge {index} (`{text}`) is not two space-separated tokens")]
    BadMerge { index: usize, text: String },
    #[error("pre-tokenizer regex: {0}")]
    Regex(String),
}

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Undefined,
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    fn from_i64(v: i64) -> Self {
        match v {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Undefined,
        }
    }
}

/// Token texts, scores and the text -> id map.
#[derive(Debug)]
struct Vocab {
    texts: StrTable,
    scores: Vec<f32>,
    types: Vec<TokenType>,
    to_id: StrIndex,
    /// SPM byte-fallback tokens `<0xNN>`.
    byte_tokens: [Option<u32>; 256],
    unk: Option<u32>,
}

impl Vocab {
    fn lookup(&self, text: &[u8]) -> Option<u32> {
        self.to_id.find(&self.texts, text)
    }

    fn text(&self, id: u32) -> &[u8] {
        self.texts.get(id as usize).unwrap_or_default()
    }

    /// llama.cpp's `byte_to_token` for SPM: `<0xNN>`, else the byte as a one-char token, else UNK.
    fn byte_token(&self, b: u8) -> Option<u32> {
        self.byte_tokens[b as usize].or_else(|| self.lookup(&[b])).or(self.unk)
    }
}

#[derive(Debug)]
enum Algorithm {
    Spm,
    Bpe {
        pre: PreTokenizer,
        /// Merge `"left right"` -> rank (its index in `tokenizer.ggml.merges`).
        ranks: HashMap<Box<str>, u32>,
    },
}

/// A piece of input text after special tokens are cut out.
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// A tokenizer for one model: encode text to ids and ids back to bytes.
#[derive(Debug)]
pub struct Tokenizer {
    vocab: Vocab,
    algo: Algorithm,
    /// Bytes each id decodes to (special tokens rendered as their text).
    pieces: StrTable,
    /// Control, user-defined and unknown tokens, longest text first (`cache_special_tokens`).
    special: Vec<u32>,
    /// Finds which special texts occur in an input at all, so that partitioning only scans those.
    special_finder: Option<AhoCorasick>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

/// Token texts llama.cpp treats as end of generation (`special_eog_ids`), besides EOS/EOT/EOM.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// Token texts llama.cpp searches for the end-of-turn token when the metadata names none.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

fn token_id(g: &Gguf, key: &str, n_vocab: usize) -> Option<Option<u32>> {
    let v = g.get(key)?;
    // llama.cpp stores -1 (as u32::MAX) for "none".
    let id = v.as_i64()?;
    Some(u32::try_from(id).ok().filter(|&id| (id as usize) < n_vocab))
}

impl Tokenizer {
    /// Builds the tokenizer described by the `tokenizer.ggml.*` metadata of `g`.
    pub fn from_gguf(g: &Gguf) -> Result<Self, TokenizerError> {
        const TOKENS: &str = "tokenizer.ggml.tokens";
        const MODEL: &str = "tokenizer.ggml.model";
        let model = g.get_str(MODEL).ok_or(TokenizerError::MissingKey(MODEL))?;
        let texts: Vec<&[u8]> = g
            .get_array(TOKENS)
            .ok_or(TokenizerError::MissingKey(TOKENS))?
            .strings()
            .ok_or(TokenizerError::WrongType {
                key: TOKENS,
                expected: "an array of strings",
            })?;
        let n = texts.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }

        const SCORES: &str = "tokenizer.ggml.scores";
        let scores = match g.get_array(SCORES) {
            Some(a) => {
                let s = a.f32s().ok_or(TokenizerError::WrongType {
                    key: SCORES,
                    expected: "an array of numbers",
                })?;
                if s.len() != n {
                    return Err(TokenizerError::LengthMismatch {
                        key: SCORES,
                        got: s.len(),
                        expected: n,
                    });
                }
                s
            }
            None => vec![0.0; n],
        };
        const TYPES: &str = "tokenizer.ggml.token_type";
        let mut types = match g.get_array(TYPES) {
            Some(a) => {
                let t = a.i64s().ok_or(TokenizerError::WrongType {
                    key: TYPES,
                    expected: "an array of integers",
                })?;
                if t.len() != n {
                    return Err(TokenizerError::LengthMismatch {
                        key: TYPES,
                        got: t.len(),
                        expected: n,
                    });
                }
                t.into_iter().map(TokenType::from_i64).collect()
            }
            None => vec![TokenType::Normal; n],
        };

        let mut table = StrTable::with_capacity(n, texts.iter().map(|t| t.len()).sum());
        for t in &texts {
            table.push(t);
        }
        let to_id = StrIndex::build(&table);
        let find = |t: &str| to_id.find(&table, t.as_bytes());

        let pre_name = g.get_str("tokenizer.ggml.pre").unwrap_or("");
        let (algo, mut add_bos, mut add_space_prefix, default_bos, default_eos) = match model {
            "llama" => (Algorithm::Spm, true, true, Some(1), Some(2)),
            "gpt2" => {
                let kind = PreTokenizerKind::from_name(pre_name)
                    .ok_or_else(|| TokenizerError::UnknownPreTokenizer(pre_name.to_string()))?;
                let ranks = load_merges(g)?;
                (
                    Algorithm::Bpe {
                        pre: PreTokenizer::new(kind)?,
                        ranks,
                    },
                    kind.default_add_bos(),
                    false,
                    Some(11),
                    Some(11),
                )
            }
            other => return Err(TokenizerError::UnknownModel(other.to_string())),
        };
        let mut add_eos = false;
        if let Some(b) = g.get_bool("tokenizer.ggml.add_bos_token") {
            add_bos = b;
        }
        if let Some(b) = g.get_bool("tokenizer.ggml.add_eos_token") {
            add_eos = b;
        }
        if let Some(b) = g.get_bool("tokenizer.ggml.add_space_prefix") {
            add_space_prefix = b;
        }

        let in_vocab = |id: u32| ((id as usize) < n).then_some(id);
        let bos = token_id(g, "tokenizer.ggml.bos_token_id", n).unwrap_or_else(|| default_bos.and_then(in_vocab));
        let eos = token_id(g, "tokenizer.ggml.eos_token_id", n).unwrap_or_else(|| default_eos.and_then(in_vocab));
        let unk = match token_id(g, "tokenizer.ggml.unknown_token_id", n) {
            Some(u) => u,
            None if matches!(algo, Algorithm::Spm) => in_vocab(0),
            None => None,
        };
        let eot = token_id(g, "tokenizer.ggml.eot_token_id", n)
            .flatten()
            .or_else(|| EOT_TEXTS.iter().find_map(|t| find(t)));
        let eom = token_id(g, "tokenizer.ggml.eom_token_id", n).flatten();

        let mut eog: Vec<u32> = EOG_TEXTS.iter().filter_map(|t| find(t)).collect();
        eog.extend([eos, eot, eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();
        // llama.cpp marks end-of-generation tokens as control tokens.
        for &id in &eog {
            types[id as usize] = TokenType::Control;
        }

        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = find(&format!("<0x{b:02X}>"));
        }

        let vocab = Vocab {
            texts: table,
            scores,
            types,
            to_id,
            byte_tokens,
            unk,
        };
        let pieces = build_pieces(&vocab, &algo);

        let mut special: Vec<u32> = (0..n as u32)
            .filter(|&id| {
                matches!(
                    vocab.types[id as usize],
                    TokenType::Control | TokenType::UserDefined | TokenType::Unknown
                ) && !vocab.text(id).is_empty()
                    && std::str::from_utf8(vocab.text(id)).is_ok()
            })
            .collect();
        special.sort_by(|&a, &b| vocab.text(b).len().cmp(&vocab.text(a).len()).then(a.cmp(&b)));
        let special_finder = if special.is_empty() {
            None
        } else {
            AhoCorasick::new(special.iter().map(|&id| vocab.text(id))).ok()
        };

        Ok(Self {
            vocab,
            algo,
            pieces,
            special,
            special_finder,
            bos,
            eos,
            eot,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.texts.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The end-of-turn token (`<|im_end|>`, `<end_of_turn>`, ...), if the model has one.
    pub fn eot_id(&self) -> Option<u32> {
        self.eot
    }

    /// Whether generation should stop at `id` (EOS, EOT and llama.cpp's other end-of-generation texts).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The end-of-generation token ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos && self.eos.is_some()
    }

    /// The token's text as stored in the vocabulary (lossy UTF-8), `None` when out of range.
    pub fn token_str(&self, id: u32) -> Option<std::borrow::Cow<'_, str>> {
        self.vocab.texts.get(id as usize).map(|t| String::from_utf8_lossy(t))
    }

    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.vocab.types.get(id as usize).copied()
    }

    /// Whether `id` is a control token (rendered only when special tokens are shown).
    pub fn is_control(&self, id: u32) -> bool {
        matches!(self.token_type(id), Some(TokenType::Control))
    }

    /// The id of a token with exactly this text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.lookup(text.as_bytes())
    }

    /// Raw bytes `id` decodes to: byte-fallback tokens become their byte, BPE text is mapped back
    /// to bytes, SentencePiece's U+2581 becomes a space, special tokens give their text. Empty
    /// for ids outside the vocabulary and unused tokens.
    pub fn token_to_piece(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).unwrap_or_default()
    }

    /// Tokenizes `text`. `add_special` adds BOS/EOS as the metadata says; `parse_special` turns
    /// control-token texts in `text` (e.g. `<|im_start|>`) into their ids. User-defined tokens
    /// are always matched, as in llama.cpp.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let fragments = self.partition(text, parse_special);
        match &self.algo {
            Algorithm::Spm => {
                let mut prev_special = true;
                let mut buf = Vec::new();
                for f in fragments {
                    match f {
                        Fragment::Text(t) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.extend_from_slice("\u{2581}".as_bytes());
                            }
                            for &b in t.as_bytes() {
                                if b == b' ' {
                                    buf.extend_from_slice("\u{2581}".as_bytes());
                                } else {
                                    buf.push(b);
                                }
                            }
                            spm::tokenize(&self.vocab, &buf, &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Algorithm::Bpe { pre, ranks } => {
                let table = byte_table();
                let mut word = String::new();
                let mut key = String::new();
                for f in fragments {
                    match f {
                        Fragment::Text(t) => {
                            for (s, e) in pre.split(t) {
                                word.clear();
                                word.extend(t.as_bytes()[s..e].iter().map(|&b| table[b as usize]));
                                bpe::tokenize_word(
                                    &self.vocab,
                                    ranks,
                                    pre.kind().ignore_merges(),
                                    &word,
                                    &mut key,
                                    &mut out,
                                );
                            }
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// Cuts special-token texts out of `text` (llama.cpp's `tokenizer_st_partition`): for each
    /// special token, longest first, every occurrence in the remaining text pieces is replaced by
    /// the token. Control and unknown tokens only when `parse_special`.
    fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut frags = vec![Fragment::Text(text)];
        let Some(finder) = &self.special_finder else {
            return frags;
        };
        let mut present = vec![false; self.special.len()];
        let mut any = false;
        for m in finder.find_overlapping_iter(text) {
            present[m.pattern().as_usize()] = true;
            any = true;
        }
        if !any {
            return frags;
        }
        for (idx, &id) in self.special.iter().enumerate() {
            if !present[idx] {
                continue;
            }
            if !parse_special && matches!(self.vocab.types[id as usize], TokenType::Control | TokenType::Unknown) {
                continue;
            }
            // Checked UTF-8 when `special` was built.
            let Ok(pat) = std::str::from_utf8(self.vocab.text(id)) else {
                continue;
            };
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                match f {
                    Fragment::Text(t) if t.contains(pat) => {
                        let mut last = 0;
                        for (pos, _) in t.match_indices(pat) {
                            if pos > last {
                                next.push(Fragment::Text(&t[last..pos]));
                            }
                            next.push(Fragment::Token(id));
                            last = pos + pat.len();
                        }
                        if last < t.len() {
                            next.push(Fragment::Text(&t[last..]));
                        }
                    }
                    other => next.push(other),
                }
            }
            frags = next;
        }
        frags
    }

    /// Decodes ids to text, rendering special tokens; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.decode_with(ids, true)
    }

    /// Decodes ids to text; control tokens are skipped unless `render_special`.
    pub fn decode_with(&self, ids: &[u32], render_special: bool) -> String {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            if !render_special && self.is_control(id) {
                continue;
            }
            let mut p = self.token_to_piece(id);
            // llama.cpp strips the space a SentencePiece prefix added to the first token.
            if i == 0 && self.add_space_prefix && p.first() == Some(&b' ') {
                p = &p[1..];
            }
            bytes.extend_from_slice(p);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A streaming decoder bound to this tokenizer.
    pub fn detokenizer(&self) -> Detokenizer<'_> {
        Detokenizer::new(self)
    }
}

fn byte_table() -> &'static [char; 256] {
    static TABLE: std::sync::OnceLock<[char; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(pretokenize::byte_to_unicode_table)
}

fn load_merges(g: &Gguf) -> Result<HashMap<Box<str>, u32>, TokenizerError> {
    const MERGES: &str = "tokenizer.ggml.merges";
    let merges = g
        .get_array(MERGES)
        .ok_or(TokenizerError::MissingKey(MERGES))?
        .strings()
        .ok_or(TokenizerError::WrongType {
            key: MERGES,
            expected: "an array of strings",
        })?;
    let mut ranks = HashMap::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let bad = || TokenizerError::BadMerge {
            index: i,
            text: String::from_utf8_lossy(m).into_owned(),
        };
        let s = std::str::from_utf8(m).map_err(|_| bad())?;
        // llama.cpp splits at the first space after the first byte.
        let pos = s
            .bytes()
            .skip(1)
            .position(|b| b == b' ')
            .map(|p| p + 1)
            .ok_or_else(bad)?;
        let key: Box<str> = format!("{} {}", &s[..pos], &s[pos + 1..]).into();
        // The first (lowest-rank) occurrence wins.
        ranks.entry(key).or_insert(i as u32);
    }
    Ok(ranks)
}

/// The bytes each token decodes to (llama.cpp's `token_to_piece` with special tokens rendered).
fn build_pieces(vocab: &Vocab, algo: &Algorithm) -> StrTable {
    const SPACE_MARK: &[u8] = "\u{2581}".as_bytes();
    // GPT-2 char -> byte; every mapped char is below U+0144.
    let mut inverse = [None::<u8>; 0x144];
    for (b, &c) in byte_table().iter().enumerate() {
        inverse[c as usize] = Some(b as u8);
    }
    let n = vocab.texts.len();
    let mut pieces = StrTable::with_capacity(n, n * 8);
    let mut out = Vec::new();
    for id in 0..n as u32 {
        let text = vocab.text(id);
        out.clear();
        match vocab.types[id as usize] {
            TokenType::Control | TokenType::Unknown | TokenType::UserDefined => out.extend_from_slice(text),
            TokenType::Unused | TokenType::Undefined => {}
            TokenType::Byte if matches!(algo, Algorithm::Spm) => match parse_byte_token(text) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(text),
            },
            _ => match algo {
                Algorithm::Spm => {
                    let mut rest = text;
                    while !rest.is_empty() {
                        if rest.starts_with(SPACE_MARK) {
                            out.push(b' ');
                            rest = &rest[SPACE_MARK.len()..];
                        } else {
                            out.push(rest[0]);
                            rest = &rest[1..];
                        }
                    }
                }
                Algorithm::Bpe { .. } => match std::str::from_utf8(text) {
                    Ok(s) => {
                        for c in s.chars() {
                            match inverse.get(c as usize).copied().flatten() {
                                Some(b) => out.push(b),
                                None => {
                                    let mut buf = [0u8; 4];
                                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                                }
                            }
                        }
                    }
                    Err(_) => out.extend_from_slice(text),
                },
            },
        }
        pieces.push(&out);
    }
    pieces
}

/// `<0xNN>` -> NN.
fn parse_byte_token(text: &[u8]) -> Option<u8> {
    let s = std::str::from_utf8(text).ok()?;
    let hex = s.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Streaming detokenizer: turns ids into text as they are generated, holding back the bytes of an
/// incomplete UTF-8 sequence until the rest arrives, so a stream never shows a broken character.
/// Bytes that can never become valid UTF-8 are emitted as U+FFFD.
#[derive(Debug)]
pub struct Detokenizer<'t> {
    tok: &'t Tokenizer,
    pending: Vec<u8>,
    render_special: bool,
}

impl<'t> Detokenizer<'t> {
    pub fn new(tok: &'t Tokenizer) -> Self {
        Self {
            tok,
            pending: Vec::new(),
            render_special: true,
        }
    }

    /// Whether control tokens are shown (default true, as llama.cpp's `common_token_to_piece`).
    pub fn render_special(mut self, yes: bool) -> Self {
        self.render_special = yes;
        self
    }

    /// Adds one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        if self.render_special || !self.tok.is_control(id) {
            self.pending.extend_from_slice(self.tok.token_to_piece(id));
        }
        self.take_complete()
    }

    /// Returns whatever is still held back (an unfinished sequence becomes U+FFFD).
    pub fn flush(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }

    /// Bytes held back because they may start a multi-byte character.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.pending
    }

    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8 by construction.
                    out.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            rest = &after[bad..];
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let start = self.pending.len() - keep;
        self.pending.drain(..start);
        out
    }
}
