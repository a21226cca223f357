//! The `weir job …` client: one request per connection, over mutual TLS, to a peer that must
//! hold the coordinator's certificate.

use std::time::Duration;

use crate::net::connect;
use crate::protocol::{ClientRequest, ClientResponse, Hello};
use crate::tls::{Role, TlsContext};
use crate::wire::{read_message, write_message, ReadLimits, FRAME_BYTES_MAX};

/// How long the client waits for the coordinator's answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the client waits for a savepoint: a checkpoint may take up to its timeout (ten
/// minutes by default) before it is declined.
const SAVEPOINT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Sends `request` to the coordinator at `address` and returns its response.
pub async fn request(tls: &TlsContext, address: &str, request: &ClientRequest) -> std::io::Result<ClientResponse> {
    let stream = connect(tls, address, Role::Coordinator).await?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    write_message(&mut writer, &Hello::Client).await?;
    write_message(&mut writer, request).await?;
    let timeout = match request {
        ClientRequest::Savepoint { .. } => SAVEPOINT_TIMEOUT,
        _ => RESPONSE_TIMEOUT,
    };
    read_message(&mut reader, ReadLimits::new(FRAME_BYTES_MAX, timeout))
        .await?
        .ok_or_else(|| std::io::Error::other("coordinator closed the connection"))
}
