//! Framing: every message on a cluster connection is a 4-byte big-endian length followed by
//! its bincode encoding. A frame of length zero is a keepalive: it carries nothing and tells
//! the reader that the peer (and the path to it) is alive.
//!
//! Everything a peer sends is untrusted until it decodes and validates, so the reader is
//! defensive: a frame's length is checked against the limit of its connection *before*
//! anything is allocated, the body is read into a buffer that grows only as bytes actually
//! arrive (a peer that announces 512 MiB and sends nothing costs nothing), every wait for the
//! peer has a timeout, and decoding is bounded by the frame's own length and rejects trailing
//! bytes. Decoding never panics on arbitrary bytes (property tests in `tests/wire.rs`).

use std::time::Duration;

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame of a control connection (slot state travels in them).
pub const FRAME_BYTES_MAX: usize = 512 << 20;
/// The largest frame on a data connection (an exchange batch or a credit). A batch holds at
/// most 8192 records (the sources' batch size) of 32 bytes: 4 MiB leaves room, and bounds what
/// a peer can make one channel hold to its credits × 4 MiB.
pub const DATA_FRAME_BYTES_MAX: usize = 4 << 20;
/// The largest frame from a client (a job submission with its file list), or a hello.
pub const CLIENT_FRAME_BYTES_MAX: usize = 16 << 20;
/// The largest first frame of any connection.
pub const HELLO_BYTES_MAX: usize = 4 << 10;
/// How long a new connection may take to say who it is (and a registration to be answered).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a frame's body is read (and allocated) at a time.
const READ_CHUNK_BYTES: usize = 64 << 10;

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// The one bincode configuration of the wire: fixed-width integers, no trailing bytes, and
/// every length bounded by `limit` bytes.
fn codec(limit: u64) -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().reject_trailing_bytes().with_limit(limit)
}

/// Encodes a message as one frame.
pub fn encode<T: Serialize>(message: &T) -> std::io::Result<Vec<u8>> {
    let body = codec(FRAME_BYTES_MAX as u64).serialize(message).map_err(|e| invalid(format!("encode: {e}")))?;
    assert!(!body.is_empty(), "every message encodes to at least its tag: an empty frame is a keepalive");
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Decodes the body of one frame.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> std::io::Result<T> {
    codec(body.len() as u64).deserialize(body).map_err(|e| invalid(format!("malformed message: {e}")))
}

/// Writes one message and flushes.
pub async fn write_message<W: AsyncWrite + Unpin, T: Serialize>(writer: &mut W, message: &T) -> std::io::Result<()> {
    write_frame(writer, &encode(message)?).await
}

/// Writes one frame made by [`encode`] and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, frame: &[u8]) -> std::io::Result<()> {
    writer.write_all(frame).await?;
    writer.flush().await
}

/// Writes a keepalive (an empty frame) and flushes.
pub async fn write_keepalive<W: AsyncWrite + Unpin>(writer: &mut W) -> std::io::Result<()> {
    writer.write_all(&0u32.to_be_bytes()).await?;
    writer.flush().await
}

/// How a reader waits for a peer: the largest frame it accepts, and how long any wait for the
/// peer's next bytes may last (`None`: no bound, for in-process tests only).
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    /// The largest frame accepted.
    pub frame_bytes_max: usize,
    /// The longest wait for the peer's next bytes.
    pub idle_timeout: Option<Duration>,
}

impl ReadLimits {
    /// Frames up to `frame_bytes_max`, each wait at most `idle_timeout`.
    pub fn new(frame_bytes_max: usize, idle_timeout: Duration) -> Self {
        ReadLimits { frame_bytes_max, idle_timeout: Some(idle_timeout) }
    }
}

async fn within<F: std::future::Future<Output = std::io::Result<T>>, T>(
    limits: &ReadLimits,
    future: F,
) -> std::io::Result<T> {
    match limits.idle_timeout {
        None => future.await,
        Some(timeout) => weir_core::rt::timeout(timeout, future).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, format!("the peer sent nothing for {timeout:?}"))
        })?,
    }
}

/// Reads one message, skipping keepalives; `Ok(None)` at a clean end of stream (between
/// frames). Not cancel-safe: run it in a task of its own.
pub async fn read_message<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
    limits: ReadLimits,
) -> std::io::Result<Option<T>> {
    loop {
        match read_frame(reader, limits, || {}).await? {
            None => return Ok(None),
            Some(body) if body.is_empty() => continue, // a keepalive
            Some(body) => return decode(&body).map(Some),
        }
    }
}

/// Reads one frame's body (empty for a keepalive); `Ok(None)` at a clean end of stream.
/// `progress` is called whenever bytes arrive (a header, a chunk of a body), so that a caller
/// watching the peer's liveness sees a large frame arriving as activity.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limits: ReadLimits,
    mut progress: impl FnMut(),
) -> std::io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 4];
    match within(&limits, reader.read_exact(&mut length)).await {
        Ok(_) => progress(),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > limits.frame_bytes_max {
        return Err(invalid(format!(
            "peer sent a frame of {length} bytes; this connection accepts at most {}",
            limits.frame_bytes_max
        )));
    }
    let mut body = Vec::with_capacity(length.min(READ_CHUNK_BYTES));
    while body.len() < length {
        let start = body.len();
        body.resize(start + (length - start).min(READ_CHUNK_BYTES), 0);
        within(&limits, reader.read_exact(&mut body[start..])).await?;
        progress();
    }
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(frame_bytes_max: usize) -> ReadLimits {
        ReadLimits { frame_bytes_max, idle_timeout: None }
    }

    #[test]
    fn frames_round_trip_and_keepalives_are_skipped() {
        futures::executor::block_on(async {
            let mut bytes = 0u32.to_be_bytes().to_vec();
            bytes.extend(encode(&(7u64, "x".to_string())).unwrap());
            let mut reader = bytes.as_slice();
            let got: Option<(u64, String)> = read_message(&mut reader, limits(100)).await.unwrap();
            assert_eq!(got, Some((7, "x".to_string())));
            let end: Option<(u64, String)> = read_message(&mut reader, limits(100)).await.unwrap();
            assert_eq!(end, None);
        });
    }

    #[test]
    fn oversized_and_lying_frames_are_errors_not_allocations() {
        futures::executor::block_on(async {
            // Announces 512 MiB, sends 3 bytes: an error (early end), with only a chunk allocated.
            let mut bytes = (FRAME_BYTES_MAX as u32).to_be_bytes().to_vec();
            bytes.extend([1, 2, 3]);
            let result: std::io::Result<Option<u64>> =
                read_message(&mut bytes.as_slice(), limits(FRAME_BYTES_MAX)).await;
            assert!(result.is_err());
            // Over the connection's limit: refused before reading the body.
            let bytes = 1000u32.to_be_bytes();
            let result: std::io::Result<Option<u64>> = read_message(&mut bytes.as_slice(), limits(999)).await;
            assert!(result.unwrap_err().to_string().contains("at most 999"));
            // A vector that claims more elements than its frame holds.
            let mut body = Vec::new();
            body.extend(u64::MAX.to_le_bytes());
            let result: std::io::Result<Vec<u64>> = decode(&body);
            assert!(result.is_err());
            // Trailing bytes.
            let result: std::io::Result<u8> = decode(&[1, 2]);
            assert!(result.is_err());
        });
    }
}
