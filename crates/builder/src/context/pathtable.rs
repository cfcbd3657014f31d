//! A lookup table from paths to positions in a list that already owns the paths.
//!
//! The context index and the digest memo each hold tens of thousands of paths; a
//! `HashMap<String, usize>` would copy every one of them (an allocation each, and as many
//! frees at the end of the build). This table stores only positions and compares against
//! the owner's bytes.

use std::hash::BuildHasher;

/// Open addressing, sized to stay at most half full so a probe is short. A slot holds the
/// high half of the key's hash above its position (`EMPTY`: none), so a probe compares the
/// owner's bytes only when the hashes agree.
#[derive(Debug, Clone, Default)]
pub(crate) struct PathTable {
    slots: Vec<u64>,
    hasher: std::collections::hash_map::RandomState,
}

const EMPTY: u64 = u64::MAX;

fn slot_value(hash: u64, pos: usize) -> u64 {
    (hash & !0xffff_ffff) | pos as u64
}

impl PathTable {
    /// A table of the `n` keys `key(0..n)`. A key that is already present keeps its first
    /// position. `None` when `n` does not fit in a position.
    pub fn build<'a>(n: usize, key: impl Fn(usize) -> &'a [u8]) -> Option<PathTable> {
        if n >= u32::MAX as usize / 2 {
            return None;
        }
        let size = (n * 2).next_power_of_two().max(16);
        let mut table = PathTable {
            slots: vec![EMPTY; size],
            hasher: Default::default(),
        };
        let mask = size - 1;
        for i in 0..n {
            let k = key(i);
            let hash = table.hasher.hash_one(k);
            let mut slot = hash as usize & mask;
            loop {
                let at = table.slots[slot];
                if at == EMPTY {
                    table.slots[slot] = slot_value(hash, i);
                    break;
                }
                if at >> 32 == hash >> 32 && key(at as u32 as usize) == k {
                    break;
                }
                slot = (slot + 1) & mask;
            }
        }
        Some(table)
    }

    /// The position whose key (`key(position)`) is `wanted`.
    pub fn find<'a>(&self, wanted: &[u8], key: impl Fn(usize) -> &'a [u8]) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let hash = self.hasher.hash_one(wanted);
        let mut slot = hash as usize & mask;
        loop {
            let at = *self.slots.get(slot)?;
            if at == EMPTY {
                return None;
            }
            if at >> 32 == hash >> 32 && key(at as u32 as usize) == wanted {
                return Some(at as u32 as usize);
            }
            slot = (slot + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_key_and_nothing_else() {
        let keys: Vec<String> = (0..1000).map(|i| format!("d{}/f{i}", i % 7)).collect();
        let t = PathTable::build(keys.len(), |i| keys[i].as_bytes()).unwrap();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(t.find(k.as_bytes(), |i| keys[i].as_bytes()), Some(i));
        }
        assert_eq!(t.find(b"d0/f1", |i| keys[i].as_bytes()), None);
        assert_eq!(t.find(b"", |i| keys[i].as_bytes()), None);
        let empty = PathTable::default();
        assert_eq!(empty.find(b"x", |i| keys[i].as_bytes()), None);
    }

    #[test]
    fn duplicate_keys_keep_the_first_position() {
        let keys = ["a", "b", "a"];
        let t = PathTable::build(keys.len(), |i| keys[i].as_bytes()).unwrap();
        assert_eq!(t.find(b"a", |i| keys[i].as_bytes()), Some(0));
    }
}
