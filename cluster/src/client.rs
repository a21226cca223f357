//! The `weir job …` client: one request per connection, over mutual TLS.

use crate::net::connect;
use crate::protocol::{ClientRequest, ClientResponse, Hello};
use crate::tls::TlsContext;
use crate::wire::{read_message, write_message};

/// Sends `request` to the coordinator at `address` and returns its response.
pub async fn request(tls: &TlsContext, address: &str, request: &ClientRequest) -> std::io::Result<ClientResponse> {
    let stream = connect(tls, address).await?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    write_message(&mut writer, &Hello::Client).await?;
    write_message(&mut writer, request).await?;
    read_message(&mut reader).await?.ok_or_else(|| std::io::Error::other("coordinator closed the connection"))
}
