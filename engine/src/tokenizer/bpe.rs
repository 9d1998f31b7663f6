//! GPT-2 byte-level BPE: llama.cpp's `llm_tokenizer_bpe_session`. Each pre-tokenized word is
//! mapped byte -> unicode, split into characters, and the adjacent pair with the lowest merge rank
//! (ties: leftmost) is merged until no pair has a rank.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Vocab;

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    rank: u32,
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
    /// Max-heap order: lower rank first, then smaller left index.
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then_with(|| other.left.cmp(&self.left))
    }
}

/// Merges one byte-encoded word and appends its token ids to `out`. `key` is scratch space.
pub(super) fn tokenize_word(
    vocab: &Vocab,
    ranks: &std::collections::HashMap<Box<str>, u32>,
    ignore_merges: bool,
    word: &str,
    key: &mut String,
    out: &mut Vec<u32>,
) {
    if word.is_empty() {
        return;
    }
    if ignore_merges {
        if let Some(id) = vocab.lookup(word.as_bytes()) {
            out.push(id);
            return;
        }
    }
    let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
    for (i, (start, c)) in word.char_indices().enumerate() {
        let len = c.len_utf8();
        symbols.push(Symbol {
            start,
            len,
            prev: i.checked_sub(1),
            next: if start + len == word.len() { None } else { Some(i + 1) },
        });
    }

    let mut queue = BinaryHeap::new();
    let mut try_add =
        |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
            let (Some(left), Some(right)) = (left, right) else {
                return;
            };
            let l: &Symbol = &symbols[left];
            let r: &Symbol = &symbols[right];
            key.clear();
            key.push_str(&word[l.start..l.start + l.len]);
            key.push(' ');
            key.push_str(&word[r.start..r.start + r.len]);
            if let Some(&rank) = ranks.get(key.as_str()) {
                queue.push(Bigram {
                    rank,
                    left,
                    right,
                    size: l.len + r.len,
                });
            }
        };
    for i in 1..symbols.len() {
        try_add(&mut queue, &symbols, Some(i - 1), Some(i));
    }

    while let Some(b) = queue.pop() {
        let (l, r) = (symbols[b.left], symbols[b.right]);
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
        let piece = &word.as_bytes()[s.start..s.start + s.len];
        match vocab.lookup(piece) {
            Some(id) => out.push(id),
            // As llama.cpp: fall back to single-byte tokens of the encoded text, dropping the rest.
            None => out.extend(piece.iter().filter_map(|b| vocab.lookup(&[*b]))),
        }
        i = s.next;
    }
}
