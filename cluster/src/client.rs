//! The `weir job …` client: one request per connection, over mutual TLS, to a peer that must
//! hold the coordinator's certificate.

use std::time::Duration;

use crate::net::connect;
use crate::protocol::{ClientRequest, ClientResponse, Hello};
use crate::tls::{Role, TlsContext};
use crate::wire::{read_message, write_message, ReadLimits, FRAME_BYTES_MAX};

/// How long the client waits for the coordinator's answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `request` to the coordinator at `address` and returns its response.
pub async fn request(tls: &TlsContext, address: &str, request: &ClientRequest) -> std::io::Result<ClientResponse> {
    let stream = connect(tls, address, Role::Coordinator).await?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    write_message(&mut writer, &Hello::Client).await?;
    write_message(&mut writer, request).await?;
    read_message(&mut reader, ReadLimits::new(FRAME_BYTES_MAX, RESPONSE_TIMEOUT))
        .await?
        .ok_or_else(|| std::io::Error::other("coordinator closed the connection"))
}
