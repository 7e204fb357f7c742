//! The canonical codec: fixed little-endian integers, `u32` length prefixes, no padding, no
//! optional encodings. Every value has exactly one encoding, so digests over encodings are stable
//! across cores, versions and platforms.
//!
//! Decoding works over a [`Bytes`] buffer and returns byte strings (payloads, transactions) as
//! slices of it: nothing is copied. Every length is checked against a limit *and* against the
//! bytes actually remaining before anything is allocated, and every failure is a [`DecodeError`].

use bytes::Bytes;

use crate::limits::MAX_MESSAGE_BYTES;
use crate::types::{AuthorityIndex, Digest, Round};

/// Why a byte string is not a valid encoding.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended early.
    #[error("truncated: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Where decoding stopped.
        offset: usize,
        /// Bytes that were missing.
        needed: usize,
    },
    /// Bytes were left over after the value.
    #[error("{extra} trailing bytes")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// A length prefix above its limit.
    #[error("{what}: length {len} exceeds limit {max}")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// The claimed length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The whole message is larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {len} bytes exceeds limit {max}")]
    MessageTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An enum tag that names no variant.
    #[error("{what}: unknown tag {tag}")]
    UnknownTag {
        /// Which enum.
        what: &'static str,
        /// The tag.
        tag: u8,
    },
    /// A value that is well formed but not canonical (unsorted set, duplicate, stray bit...).
    #[error("non-canonical {what}")]
    NonCanonical {
        /// Which field.
        what: &'static str,
    },
}

/// Shared byte strings at least this long are not copied into the encoding: they become chunks
/// of their own, referenced (see [`Writer::finish_chunks`]). Payloads (tens of KB and more) are
/// referenced; transactions (hundreds of bytes) are copied, so a `Submit` of a thousand of them
/// is one contiguous buffer, not a list of two thousand chunks the sender walks again on every
/// partial write.
pub const SHARED_CHUNK_MIN: usize = 4_096;

/// Appends canonical encodings to a buffer.
///
/// Large shared byte strings (payloads, transactions) written with [`Writer::shared`] are kept by
/// reference: [`Writer::finish_chunks`] returns the encoding as a list of `Bytes` chunks, ready for
/// a vectored write, in which those strings are the caller's own buffers, not copies.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
    /// Completed chunks before `buf`.
    chunks: Vec<Bytes>,
    /// Bytes in `chunks`.
    chunked: usize,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// A writer with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Writer {
        Writer {
            buf: Vec::with_capacity(bytes),
            ..Writer::default()
        }
    }

    /// The encoded bytes in one buffer (shared chunks are copied in).
    pub fn finish(self) -> Vec<u8> {
        if self.chunks.is_empty() {
            return self.buf;
        }
        let mut out = Vec::with_capacity(self.chunked + self.buf.len());
        for chunk in &self.chunks {
            out.extend_from_slice(chunk);
        }
        out.extend_from_slice(&self.buf);
        out
    }

    /// The encoded bytes as chunks whose concatenation is the encoding; shared byte strings are
    /// chunks of their own, not copied.
    pub fn finish_chunks(mut self) -> Vec<Bytes> {
        if !self.buf.is_empty() {
            self.chunks.push(Bytes::from(self.buf));
        }
        self.chunks
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.chunked + self.buf.len()
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length-prefixed shared bytes: long ones are referenced, not copied.
    pub fn shared(&mut self, bytes: &Bytes) {
        self.len_prefix(bytes.len());
        if bytes.len() < SHARED_CHUNK_MIN {
            self.raw(bytes);
            return;
        }
        if !self.buf.is_empty() {
            let inline = std::mem::take(&mut self.buf);
            self.chunked += inline.len();
            self.chunks.push(Bytes::from(inline));
        }
        self.chunked += bytes.len();
        self.chunks.push(bytes.clone());
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// Little-endian `u16`.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Little-endian `u32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Little-endian `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// A boolean as one byte, 0 or 1.
    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    /// Raw bytes with no length prefix (fixed-size fields).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
    /// A length prefix. Lengths above `u32::MAX` cannot be produced by a core (limits are far
    /// below), so this is an invariant, not an input error.
    pub fn len_prefix(&mut self, len: usize) {
        self.u32(u32::try_from(len).expect("length fits u32"));
    }
    /// Length-prefixed bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.len_prefix(bytes.len());
        self.raw(bytes);
    }
    /// A round.
    pub fn round(&mut self, r: Round) {
        self.u64(r.0);
    }
    /// An authority index.
    pub fn authority(&mut self, a: AuthorityIndex) {
        self.u16(a.0);
    }
    /// A digest.
    pub fn digest(&mut self, d: &Digest) {
        self.raw(&d.0);
    }
    /// A length-prefixed sequence.
    pub fn seq<T: Encode>(&mut self, items: &[T]) {
        self.len_prefix(items.len());
        for item in items {
            item.encode(self);
        }
    }
}

/// Reads canonical encodings from a shared buffer, handing out zero-copy slices.
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    /// A reader over `buf`.
    pub fn new(buf: Bytes) -> Reader {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..start + n])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    /// Little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// Little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// Little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// A boolean; any byte other than 0 or 1 is non-canonical.
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::NonCanonical { what: "bool" }),
        }
    }
    /// `N` raw bytes.
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.array()
    }
    /// A length prefix for a sequence of items of at least `min_item_bytes` each, at most `max`.
    /// Checking against the remaining input first means a lying prefix cannot cause a large
    /// allocation.
    pub fn len_prefix(
        &mut self,
        what: &'static str,
        max: usize,
        min_item_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        let needed = len.saturating_mul(min_item_bytes.max(1));
        if needed > self.remaining() && min_item_bytes > 0 {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: needed - self.remaining(),
            });
        }
        Ok(len)
    }
    /// Length-prefixed bytes of at most `max`, as a zero-copy slice of the input.
    pub fn bytes(&mut self, what: &'static str, max: usize) -> Result<Bytes, DecodeError> {
        let len = self.len_prefix(what, max, 1)?;
        let start = self.pos;
        self.take(len)?;
        Ok(self.buf.slice(start..start + len))
    }
    /// A round.
    pub fn round(&mut self) -> Result<Round, DecodeError> {
        Ok(Round(self.u64()?))
    }
    /// An authority index.
    pub fn authority(&mut self) -> Result<AuthorityIndex, DecodeError> {
        Ok(AuthorityIndex(self.u16()?))
    }
    /// A digest.
    pub fn digest(&mut self) -> Result<Digest, DecodeError> {
        Ok(Digest(self.array()?))
    }
    /// A length-prefixed sequence of at most `max` items.
    pub fn seq<T: Decode>(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<Vec<T>, DecodeError> {
        let len = self.len_prefix(what, max, T::MIN_ENCODED_BYTES)?;
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            out.push(T::decode(self)?);
        }
        Ok(out)
    }
    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { extra }),
        }
    }
}

/// A type with a canonical encoding.
pub trait Encode {
    /// Appends the encoding.
    fn encode(&self, w: &mut Writer);

    /// The encoding as a fresh buffer.
    fn to_bytes(&self) -> Bytes {
        let mut w = Writer::new();
        self.encode(&mut w);
        Bytes::from(w.finish())
    }

    /// The encoding as chunks for a vectored write: payloads and other large shared byte strings
    /// are referenced, not copied (their concatenation equals [`Encode::to_bytes`]).
    fn to_chunks(&self) -> Vec<Bytes> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.finish_chunks()
    }
}

/// A type that can be decoded from its canonical encoding.
pub trait Decode: Sized {
    /// A lower bound on the encoded size of one value, used to reject lying length prefixes.
    const MIN_ENCODED_BYTES: usize;

    /// Reads one value.
    fn decode(r: &mut Reader) -> Result<Self, DecodeError>;

    /// Decodes a whole message: at most [`MAX_MESSAGE_BYTES`], nothing left over.
    fn from_bytes(bytes: Bytes) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::MessageTooLarge {
                len: bytes.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let value = Self::decode(&mut r)?;
        r.finish()?;
        Ok(value)
    }
}

impl Encode for Digest {
    fn encode(&self, w: &mut Writer) {
        w.digest(self);
    }
}

impl Decode for Digest {
    const MIN_ENCODED_BYTES: usize = 32;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        r.digest()
    }
}

impl Encode for Round {
    fn encode(&self, w: &mut Writer) {
        w.round(*self);
    }
}

impl Decode for Round {
    const MIN_ENCODED_BYTES: usize = 8;
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        r.round()
    }
}

impl Encode for Bytes {
    fn encode(&self, w: &mut Writer) {
        w.shared(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lying_length_prefix_is_rejected_before_allocating() {
        // Claims 4,000 digests but carries none.
        let mut w = Writer::new();
        w.u32(4_000);
        let err = Vec::<Digest>::decode_seq(Bytes::from(w.finish())).unwrap_err();
        assert!(matches!(err, DecodeError::Truncated { .. }), "{err:?}");
    }

    #[test]
    fn chunked_encoding_references_large_shared_bytes() {
        let big = Bytes::from(vec![7u8; 4 * SHARED_CHUNK_MIN]);
        let small = Bytes::from_static(b"tiny");
        let mut w = Writer::new();
        w.u8(1);
        w.shared(&big);
        w.shared(&small);
        w.u64(9);
        let mut flat = Writer::new();
        flat.u8(1);
        flat.bytes(&big);
        flat.bytes(&small);
        flat.u64(9);
        let chunks = w.finish_chunks();
        // Same bytes as the flat encoding, and the big string is the caller's buffer itself.
        assert_eq!(chunks.concat(), flat.finish());
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].as_ptr(), big.as_ptr());
        assert_eq!(chunks[1].len(), big.len());
    }

    #[test]
    fn slices_share_the_input_buffer() {
        let mut w = Writer::new();
        w.bytes(b"payload");
        let input = Bytes::from(w.finish());
        let mut r = Reader::new(input.clone());
        let got = r.bytes("payload", 100).unwrap();
        assert_eq!(&got[..], b"payload");
        // Same allocation: the slice points into the input.
        assert_eq!(got.as_ptr(), input[4..].as_ptr());
    }

    trait DecodeSeq: Sized {
        fn decode_seq(b: Bytes) -> Result<Self, DecodeError>;
    }
    impl DecodeSeq for Vec<Digest> {
        fn decode_seq(b: Bytes) -> Result<Self, DecodeError> {
            Reader::new(b).seq("digests", 10_000)
        }
    }
}
