//! BPE pre-tokenization: the regex splits chosen by `tokenizer.ggml.pre` and GPT-2's byte-to-unicode
//! mapping, following llama.cpp's `llama-vocab.cpp` (regex lists per pre type) and `unicode.cpp`
//! (`unicode_regex_split`: each regex further splits the pieces left by the previous one, and the
//! text between matches is kept as its own piece).

use fancy_regex::Regex;

use super::TokenizerError;

/// The BPE pre-tokenizer families ferro knows (llama.cpp's `LLAMA_VOCAB_PRE_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizerKind {
    /// No or `default` pre type: punctuation runs, GPT-2 words, digit runs, 3-digit groups.
    Default,
    /// Llama 3 (`llama3`, `llama-bpe`, ...): numbers in groups of up to 3, merges ignored for whole words.
    Llama3,
    /// Qwen 2 (`qwen2`, `stablelm2`, ...): like Llama 3 but single digits.
    Qwen2,
    /// GPT-2 (`gpt-2`, `gpt2`, `mpt`, `olmo`, ...).
    Gpt2,
    /// SmolLM / StarCoder family: every digit alone, then the GPT-2 regex.
    Smollm,
}

const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl PreTokenizerKind {
    /// Maps a `tokenizer.ggml.pre` value to its family; `None` for names ferro does not know.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "" | "default" => Self::Default,
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" => {
                Self::Llama3
            }
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" => Self::Qwen2,
            "gpt-2" | "gpt2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v1-en" | "jina-v2-es"
            | "jina-v2-de" | "jina-v2-code" | "roberta-bpe" | "mpt" | "olmo" | "jais" | "trillion" => Self::Gpt2,
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => Self::Smollm,
            _ => return None,
        })
    }

    fn patterns(self) -> &'static [&'static str] {
        match self {
            Self::Default => &[r"[\p{P}\$\+<=>\^~\|]+", GPT2_RE, r"\p{N}+", r"[0-9][0-9][0-9]"],
            Self::Llama3 => &[LLAMA3_RE],
            Self::Qwen2 => &[QWEN2_RE],
            Self::Gpt2 => &[GPT2_RE],
            Self::Smollm => &[r"\p{N}", GPT2_RE],
        }
    }

    /// Whether a whole pre-tokenized word that is in the vocabulary is emitted without merging
    /// (llama.cpp's `ignore_merges`, set for Llama 3).
    pub fn ignore_merges(self) -> bool {
        self == Self::Llama3
    }

    /// llama.cpp's default for `add_bos` when the metadata does not say.
    pub fn default_add_bos(self) -> bool {
        self == Self::Llama3
    }
}

/// Compiled regexes of one pre-tokenizer; built once per tokenizer.
#[derive(Debug)]
pub struct PreTokenizer {
    kind: PreTokenizerKind,
    regexes: Vec<Regex>,
}

impl PreTokenizer {
    pub fn new(kind: PreTokenizerKind) -> Result<Self, TokenizerError> {
        let regexes = kind
            .patterns()
            .iter()
            .map(|p| Regex::new(p).map_err(|e| TokenizerError::Regex(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { kind, regexes })
    }

    pub fn kind(&self) -> PreTokenizerKind {
        self.kind
    }

    /// Splits `text` into words (byte ranges of `text`), applying each regex to the pieces left by
    /// the previous one; unmatched stretches become pieces of their own.
    pub fn split(&self, text: &str) -> Vec<(usize, usize)> {
        let mut pieces = vec![(0, text.len())];
        let mut next = Vec::new();
        for re in &self.regexes {
            next.clear();
            for &(start, end) in &pieces {
                let piece = &text[start..end];
                let mut last = 0;
                for m in re.find_iter(piece) {
                    // A backtracking limit error leaves the rest of the piece whole.
                    let Ok(m) = m else { break };
                    if m.start() > last {
                        next.push((start + last, start + m.start()));
                    }
                    if m.end() > m.start() {
                        next.push((start + m.start(), start + m.end()));
                    }
                    last = m.end();
                }
                if last < piece.len() {
                    next.push((start + last, end));
                }
            }
            std::mem::swap(&mut pieces, &mut next);
        }
        pieces
    }
}

/// GPT-2's reversible byte -> unicode map (`bytes_to_unicode` in OpenAI's encoder.py): printable
/// Latin-1 bytes map to themselves, the others to U+0100 onwards in byte order.
pub fn byte_to_unicode_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(256 + n).expect("U+0100..U+0143 are valid chars");
            n += 1;
            c
        };
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(kind: PreTokenizerKind, text: &str) -> Vec<String> {
        let p = PreTokenizer::new(kind).unwrap();
        p.split(text).into_iter().map(|(s, e)| text[s..e].to_string()).collect()
    }

    #[test]
    fn gpt2_splits_words_and_spaces() {
        assert_eq!(
            words(PreTokenizerKind::Gpt2, "Hello  world's 42!"),
            ["Hello", " ", " world", "'s", " 42", "!"]
        );
    }

    #[test]
    fn smollm_splits_every_digit() {
        assert_eq!(words(PreTokenizerKind::Smollm, "x 123"), ["x", " ", "1", "2", "3"]);
    }

    #[test]
    fn llama3_groups_three_digits() {
        assert_eq!(
            words(PreTokenizerKind::Llama3, "1234567 I'M"),
            ["123", "456", "7", " I", "'M"]
        );
    }

    #[test]
    fn qwen2_single_digits_and_newlines() {
        assert_eq!(words(PreTokenizerKind::Qwen2, "a12\n\nb"), ["a", "1", "2", "\n\n", "b"]);
    }

    #[test]
    fn default_splits_punctuation_first() {
        assert_eq!(
            words(PreTokenizerKind::Default, "ab, 12345"),
            ["ab", ",", " ", "123", "45"]
        );
    }

    #[test]
    fn byte_table_is_a_bijection() {
        let t = byte_to_unicode_table();
        assert_eq!(t[b'A' as usize], 'A');
        assert_eq!(t[b' ' as usize], '\u{120}');
        assert_eq!(t[b'\n' as usize], '\u{10A}');
        let mut chars: Vec<char> = t.to_vec();
        chars.sort_unstable();
        chars.dedup();
        assert_eq!(chars.len(), 256);
        assert!(chars.iter().all(|&c| (c as u32) < 0x144));
    }
}
