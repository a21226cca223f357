//! A small, explicit binary codec for snapshots.
//!
//! Snapshot bytes outlive the process that wrote them, so the format is spelled out here
//! (little-endian fixed-width integers, length-prefixed byte strings) rather than left to a
//! serializer's defaults. Decoding never panics on bad bytes: a truncated or corrupt snapshot
//! is an error that names what was being read.

use thiserror::Error;

/// A snapshot could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("corrupt snapshot: {what} at byte {offset}")]
pub struct DecodeError {
    /// What was being decoded.
    pub what: &'static str,
    /// Where in the buffer.
    pub offset: usize,
}

/// Appends values to a byte buffer.
#[derive(Default, Debug)]
pub struct Encoder {
    bytes: Vec<u8>,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }
    /// An empty encoder with room for `capacity` bytes (a large output then grows in place
    /// of being copied each time its buffer doubles).
    pub fn with_capacity(capacity: usize) -> Self {
        Encoder { bytes: Vec::with_capacity(capacity) }
    }
    /// Appends a `u64`.
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }
    /// Appends an `i64`.
    pub fn i64(&mut self, value: i64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }
    /// Appends an `i128`.
    pub fn i128(&mut self, value: i128) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }
    /// Appends a length-prefixed byte string.
    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.u64(value.len() as u64);
        self.bytes.extend_from_slice(value);
        self
    }
    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads values back in the order they were encoded.
#[derive(Debug)]
pub struct Decoder<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Decoder { bytes, offset: 0 }
    }
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.offset.checked_add(len).filter(|&end| end <= self.bytes.len());
        match end {
            Some(end) => {
                let slice = &self.bytes[self.offset..end];
                self.offset = end;
                Ok(slice)
            }
            None => Err(DecodeError { what, offset: self.offset }),
        }
    }
    /// Reads a `u64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    /// Reads an `i64`.
    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    /// Reads an `i128`.
    pub fn i128(&mut self, what: &'static str) -> Result<i128, DecodeError> {
        Ok(i128::from_le_bytes(self.take(16, what)?.try_into().expect("16 bytes")))
    }
    /// Reads a length-prefixed byte string.
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u64(what)?;
        let len = usize::try_from(len).map_err(|_| DecodeError { what, offset: self.offset })?;
        self.take(len, what)
    }
    /// A count that must fit in what remains (each item at least `item_min_bytes` long).
    pub fn count(&mut self, item_min_bytes: usize, what: &'static str) -> Result<usize, DecodeError> {
        let count = self.u64(what)?;
        let remaining = (self.bytes.len() - self.offset) as u64;
        if count.saturating_mul(item_min_bytes.max(1) as u64) > remaining {
            return Err(DecodeError { what, offset: self.offset });
        }
        Ok(count as usize)
    }
    /// Fails unless every byte was consumed.
    pub fn finish(self, what: &'static str) -> Result<(), DecodeError> {
        if self.offset == self.bytes.len() {
            Ok(())
        } else {
            Err(DecodeError { what, offset: self.offset })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(a in any::<u64>(), b in any::<i64>(), c in any::<i128>(), d in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut encoder = Encoder::new();
            encoder.u64(a).i64(b).i128(c).bytes(&d);
            let bytes = encoder.finish();
            let mut decoder = Decoder::new(&bytes);
            prop_assert_eq!(decoder.u64("a").unwrap(), a);
            prop_assert_eq!(decoder.i64("b").unwrap(), b);
            prop_assert_eq!(decoder.i128("c").unwrap(), c);
            prop_assert_eq!(decoder.bytes("d").unwrap(), &d[..]);
            decoder.finish("end").unwrap();
            // Any truncation is an error, never a panic.
            for cut in 0..bytes.len() {
                let mut short = Decoder::new(&bytes[..cut]);
                let ok = short.u64("a").and_then(|_| short.i64("b")).and_then(|_| short.i128("c")).and_then(|_| short.bytes("d").map(|_| 0));
                prop_assert!(ok.is_err());
            }
        }
    }
}
