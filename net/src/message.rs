//! Reading one message (a request or a response) from a QUIC stream: the stream's end delimits
//! it, its size is bounded.
//!
//! quinn's `read_to_end` reads chunks in any order into a zero-filled buffer at their offsets:
//! every byte is written twice. Reading in order instead, a message that arrives as one chunk is
//! handed over as that chunk (no copy), and one in several chunks is copied once into a buffer of
//! exactly its size. The decoder then hands out slices of that buffer (payloads are never copied
//! again).

use bytes::{Bytes, BytesMut};

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream carried more than the limit.
    #[error("message larger than {0} bytes")]
    TooLong(usize),
    /// The stream was reset or its connection lost.
    #[error("stream: {0}")]
    Stream(#[from] quinn::ReadError),
}

/// Reads `recv` to its end: at most `max` bytes, as one contiguous buffer.
pub async fn read_message(recv: &mut quinn::RecvStream, max: usize) -> Result<Bytes, ReadError> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        total += chunk.bytes.len();
        if total > max {
            return Err(ReadError::TooLong(max));
        }
        chunks.push(chunk.bytes);
    }
    Ok(join(chunks, total))
}

/// The concatenation of `chunks` (of `total` bytes): the chunk itself when there is one.
fn join(mut chunks: Vec<Bytes>, total: usize) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().expect("one chunk");
    }
    let mut buffer = BytesMut::with_capacity(total);
    for chunk in &chunks {
        buffer.extend_from_slice(chunk);
    }
    buffer.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_chunk_is_handed_over_and_several_are_joined_in_order() {
        let one = Bytes::from_static(b"whole message");
        let joined = join(vec![one.clone()], one.len());
        assert_eq!(joined.as_ptr(), one.as_ptr(), "no copy of a single chunk");
        let parts = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cde")];
        let joined = join(parts, 5);
        assert_eq!(&joined[..], b"abcde");
        assert!(join(Vec::new(), 0).is_empty());
    }
}
