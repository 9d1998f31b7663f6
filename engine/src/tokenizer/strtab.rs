//! A compact table of byte strings (one buffer plus offsets) with an open-addressing index from
//! text to id: loading a 262k-token vocabulary costs two allocations, not two per token.

const EMPTY: u32 = u32::MAX;

#[derive(Debug, Default)]
pub(super) struct StrTable {
    buf: Vec<u8>,
    /// `offsets[i]..offsets[i + 1]` is string i.
    offsets: Vec<u32>,
}

impl StrTable {
    pub fn with_capacity(n: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        Self {
            buf: Vec::with_capacity(bytes),
            offsets,
        }
    }

    pub fn push(&mut self, s: &[u8]) {
        self.buf.extend_from_slice(s);
        // Token texts total far less than 4 GiB; saturate rather than wrap if not.
        self.offsets.push(u32::try_from(self.buf.len()).unwrap_or(u32::MAX));
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let start = *self.offsets.get(i)? as usize;
        let end = *self.offsets.get(i + 1)? as usize;
        self.buf.get(start..end)
    }
}

/// 64-bit multiplicative hash over 8-byte words (FxHash-style), good enough for token texts.
fn hash(s: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = s.len() as u64;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8-byte chunk"));
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let mut tail = [0u8; 8];
    let rest = chunks.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    h = (h.rotate_left(5) ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    h ^ (h >> 29)
}

/// Text -> id index over a [`StrTable`] (linear probing, load factor <= 1/2).
#[derive(Debug, Default)]
pub(super) struct StrIndex {
    slots: Vec<u32>,
    mask: usize,
}

impl StrIndex {
    /// Indexes every string of `tab`; for duplicated texts the last id wins (as llama.cpp's map).
    pub fn build(tab: &StrTable) -> Self {
        let cap = (tab.len() * 2).next_power_of_two().max(16);
        let mut idx = Self {
            slots: vec![EMPTY; cap],
            mask: cap - 1,
        };
        for id in 0..tab.len() {
            let text = tab.get(id).unwrap_or_default();
            let mut i = hash(text) as usize & idx.mask;
            loop {
                let slot = idx.slots[i];
                if slot == EMPTY || tab.get(slot as usize) == Some(text) {
                    idx.slots[i] = id as u32;
                    break;
                }
                i = (i + 1) & idx.mask;
            }
        }
        idx
    }

    pub fn find(&self, tab: &StrTable, text: &[u8]) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mut i = hash(text) as usize & self.mask;
        loop {
            let slot = self.slots[i];
            if slot == EMPTY {
                return None;
            }
            if tab.get(slot as usize) == Some(text) {
                return Some(slot);
            }
            i = (i + 1) & self.mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_string_and_last_duplicate_wins() {
        let mut t = StrTable::with_capacity(4, 16);
        for s in ["a", "", "hello world!", "a", "ab"] {
            t.push(s.as_bytes());
        }
        let idx = StrIndex::build(&t);
        assert_eq!(idx.find(&t, b"a"), Some(3));
        assert_eq!(idx.find(&t, b""), Some(1));
        assert_eq!(idx.find(&t, b"hello world!"), Some(2));
        assert_eq!(idx.find(&t, b"ab"), Some(4));
        assert_eq!(idx.find(&t, b"b"), None);
        assert_eq!(t.get(2), Some(&b"hello world!"[..]));
        assert_eq!(t.get(5), None);
    }
}
