//! Keys: the deterministic hash that places a key in its key group, and the hasher of keyed
//! state maps.
//!
//! Both must be the same in every process and every run — never `std`'s randomly seeded
//! hasher — because a key's group decides which slot owns its state, and the order a map
//! iterates in must not leak into output.

use std::hash::{Hash, Hasher};

use weir_core::keygroup::{key_group_of_hash, mix64, slot_of_key_group};

/// Selects a record's key (Flink's `KeySelector`). Closures `Fn(&T) -> K` are selectors; the
/// selector is evaluated again wherever the record goes, so it must be a pure function.
pub trait KeySelector<T, K>: 'static {
    /// The key of `record`.
    fn key(&self, record: &T) -> K;
}

impl<T, K, F: Fn(&T) -> K + 'static> KeySelector<T, K> for F {
    #[inline]
    fn key(&self, record: &T) -> K {
        self(record)
    }
}

/// The key of either side of two connected streams.
#[derive(Clone)]
pub struct EitherKey<KA, KB>(pub KA, pub KB);

impl<A, B, K, KA: KeySelector<A, K>, KB: KeySelector<B, K>> KeySelector<crate::process::Either<A, B>, K>
    for EitherKey<KA, KB>
{
    #[inline]
    fn key(&self, record: &crate::process::Either<A, B>) -> K {
        match record {
            crate::process::Either::Left(a) => self.0.key(a),
            crate::process::Either::Right(b) => self.1.key(b),
        }
    }
}

/// The `Hasher` methods both key hashers share: every write becomes whole 64-bit words
/// through the hasher's own `write_u64` (bytes in little-endian words, the last one tagged
/// with its length; integers widened), so only `write_u64` and `finish` differ.
macro_rules! word_folding_writes {
    () => {
        #[inline]
        fn write(&mut self, bytes: &[u8]) {
            let mut chunks = bytes.chunks_exact(8);
            for chunk in &mut chunks {
                self.write_u64(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
            }
            let rest = chunks.remainder();
            if !rest.is_empty() {
                let mut word = [0u8; 8];
                word[..rest.len()].copy_from_slice(rest);
                self.write_u64(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
            }
        }
        #[inline]
        fn write_i64(&mut self, value: i64) {
            self.write_u64(value as u64)
        }
        #[inline]
        fn write_u32(&mut self, value: u32) {
            self.write_u64(value as u64)
        }
        #[inline]
        fn write_i32(&mut self, value: i32) {
            self.write_u64(value as u32 as u64)
        }
        #[inline]
        fn write_usize(&mut self, value: usize) {
            self.write_u64(value as u64)
        }
        #[inline]
        fn write_u8(&mut self, value: u8) {
            self.write_u64(value as u64)
        }
    };
}

/// A deterministic, fast hasher for keys (no per-process seed).
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write_u64(&mut self, value: u64) {
        // One multiply and a fold: good enough for hash tables; key groups mix again.
        let product = (self.0 ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = product ^ (product >> 29);
    }
    word_folding_writes!();
}

/// Folds a key's parts into one word for [`key_hash`]: a key of one integer is that integer
/// (so an `i64` key lands in the key group stage 1 gave it); more parts are mixed in.
#[derive(Default)]
struct GroupHasher {
    state: u64,
    parts: u32,
}

impl Hasher for GroupHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.state
    }
    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.state = if self.parts == 0 { value } else { mix64(self.state ^ value) };
        self.parts += 1;
    }
    word_folding_writes!();
}

/// The deterministic hash of a key, before the key group's mixing (see
/// [`weir_core::keygroup::key_group_of_hash`]).
#[inline]
pub fn key_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut hasher = GroupHasher::default();
    key.hash(&mut hasher);
    hasher.finish()
}

/// The key group of a key.
#[inline]
pub fn key_group_of<K: Hash + ?Sized>(key: &K) -> usize {
    key_group_of_hash(key_hash(key))
}

/// The slot (of `parallelism`) that owns a key.
#[inline]
pub fn slot_of<K: Hash + ?Sized>(key: &K, parallelism: usize) -> usize {
    slot_of_key_group(key_group_of(key), parallelism)
}

/// Decodes an operator's state from a checkpoint. Decoding reads no more than the bytes given
/// (a damaged length cannot make it allocate beyond them).
pub fn decode_state<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|e| e.to_string())
}
