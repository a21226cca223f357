//! Framing: every message on a cluster connection is a 4-byte big-endian length followed by
//! its bincode encoding. A frame longer than [`FRAME_BYTES_MAX`] is a protocol error, never an
//! allocation.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame accepted (slot state travels in frames).
pub const FRAME_BYTES_MAX: usize = 512 << 20;

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// Encodes a message as one frame.
pub fn encode<T: Serialize>(message: &T) -> std::io::Result<Vec<u8>> {
    let body = bincode::serialize(message).map_err(|e| invalid(format!("encode: {e}")))?;
    if body.len() > FRAME_BYTES_MAX {
        return Err(invalid(format!("frame of {} bytes exceeds the maximum", body.len())));
    }
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Writes one message and flushes.
pub async fn write_message<W: AsyncWrite + Unpin, T: Serialize>(writer: &mut W, message: &T) -> std::io::Result<()> {
    writer.write_all(&encode(message)?).await?;
    writer.flush().await
}

/// Reads one message; `Ok(None)` at a clean end of stream.
pub async fn read_message<R: AsyncRead + Unpin, T: DeserializeOwned>(reader: &mut R) -> std::io::Result<Option<T>> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > FRAME_BYTES_MAX {
        return Err(invalid(format!("peer sent a frame of {length} bytes, over the maximum")));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    bincode::deserialize(&body).map(Some).map_err(|e| invalid(format!("malformed message: {e}")))
}
