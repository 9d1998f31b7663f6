//! SentencePiece-style tokenization with scores and byte fallback: llama.cpp's
//! `llm_tokenizer_spm_session`. Start from UTF-8 characters, repeatedly merge the adjacent pair
//! whose concatenation is the highest-scoring vocabulary token (ties: leftmost), then emit each
//! symbol's token, or its bytes as `<0xNN>` tokens when it has none.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Vocab;

/// One symbol of the linked list: a byte range of the text being tokenized.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then smaller left index.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Length of the UTF-8 sequence a lead byte starts (1 for stray continuation bytes), as
/// llama.cpp's `unicode_len_utf8`.
fn utf8_len(lead: u8) -> usize {
    match lead >> 4 {
        0xC | 0xD => 2,
        0xE => 3,
        0xF => 4,
        _ => 1,
    }
}

/// Tokenizes `text` (spaces already replaced by U+2581) and appends the ids to `out`.
pub(super) fn tokenize(vocab: &Vocab, text: &[u8], out: &mut Vec<u32>) {
    if text.is_empty() {
        return;
    }
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    let mut offs = 0;
    while offs < text.len() {
        let len = utf8_len(text[offs]).min(text.len() - offs);
        let idx = symbols.len();
        symbols.push(Symbol {
            start: offs,
            len,
            prev: idx.checked_sub(1),
            next: if offs + len == text.len() { None } else { Some(idx + 1) },
        });
        offs += len;
    }

    let mut queue = BinaryHeap::new();
    let try_add = |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let l: &Symbol = &symbols[left];
        let r: &Symbol = &symbols[right];
        let size = l.len + r.len;
        if let Some(id) = vocab.lookup(&text[l.start..l.start + size]) {
            queue.push(Bigram {
                score: vocab.scores[id as usize],
                left,
                right,
                size,
            });
        }
    };
    for i in 1..symbols.len() {
        try_add(&mut queue, &symbols, Some(i - 1), Some(i));
    }

    while let Some(b) = queue.pop() {
        let (l, r) = (symbols[b.left], symbols[b.right]);
        // Skip pairs made stale by an earlier merge.
        if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
            continue;
        }
        symbols[b.left].len += r.len;
        symbols[b.right].len = 0;
        symbols[b.left].next = r.next;
        if let Some(n) = r.next {
            symbols[n].prev = Some(b.left);
        }
        let prev = symbols[b.left].prev;
        let next = symbols[b.left].next;
        try_add(&mut queue, &symbols, prev, Some(b.left));
        try_add(&mut queue, &symbols, Some(b.left), next);
    }

    let mut i = Some(0);
    while let Some(idx) = i {
        let s = symbols[idx];
        let piece = &text[s.start..s.start + s.len];
        match vocab.lookup(piece) {
            Some(id) => out.push(id),
            None => out.extend(piece.iter().filter_map(|&b| vocab.byte_token(b))),
        }
        i = s.next;
    }
}
