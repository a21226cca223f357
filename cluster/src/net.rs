//! TLS connections over TCP: the one way cluster processes talk.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weir_core::faultpoint::{LinkDirection, LinkFault};

use crate::tls::{server_name, TlsContext};

/// A TLS stream to a peer, either side.
pub type TlsStream = tokio_rustls::TlsStream<Link>;

/// A TCP connection under TLS. It is the seam through which the simulator resets connections
/// (a TCP RST with both processes alive); in production it is the bare stream.
#[derive(Debug)]
pub struct Link {
    tcp: TcpStream,
    fault: LinkFault,
}

impl Link {
    fn new(tcp: TcpStream) -> Self {
        let fault = LinkFault::register(tcp.local_addr().ok(), tcp.peer_addr().ok());
        Link { tcp, fault }
    }

    fn reset_error() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer (injected)")
    }
}

impl AsyncRead for Link {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let link = self.get_mut();
        if link.fault.poll_reset(cx, LinkDirection::Read) {
            return Poll::Ready(Err(Link::reset_error()));
        }
        Pin::new(&mut link.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Link {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let link = self.get_mut();
        if link.fault.poll_reset(cx, LinkDirection::Write) {
            return Poll::Ready(Err(Link::reset_error()));
        }
        Pin::new(&mut link.tcp).poll_write(cx, buf)
    }

    // rustls flushes its queued records with one vectored write: forwarded, or every record
    // would cost a system call of its own.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let link = self.get_mut();
        if link.fault.poll_reset(cx, LinkDirection::Write) {
            return Poll::Ready(Err(Link::reset_error()));
        }
        Pin::new(&mut link.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let link = self.get_mut();
        if link.fault.poll_reset(cx, LinkDirection::Write) {
            return Poll::Ready(Err(Link::reset_error()));
        }
        Pin::new(&mut link.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let link = self.get_mut();
        if link.fault.poll_reset(cx, LinkDirection::Write) {
            return Poll::Ready(Err(Link::reset_error()));
        }
        Pin::new(&mut link.tcp).poll_shutdown(cx)
    }
}

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `address` and completes the mutual-TLS handshake.
pub async fn connect(tls: &TlsContext, address: &str) -> std::io::Result<TlsStream> {
    let name =
        server_name(address).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let tcp = TcpStream::connect(address).await?;
    tcp.set_nodelay(true)?;
    let connector = TlsConnector::from(tls.client.clone());
    let stream =
        weir_core::rt::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, Link::new(tcp))).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, format!("TLS handshake with {address} timed out"))
        })??;
    Ok(tokio_rustls::TlsStream::Client(stream))
}

/// Accepts TLS connections on a listener.
pub struct TlsListener {
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    /// Binds `address`. A restarted process may find its port still held for a moment (by the
    /// dying previous incarnation, or in TIME_WAIT): "address in use" is retried for a while.
    pub async fn bind(tls: &TlsContext, address: &str) -> std::io::Result<Self> {
        const BIND_ATTEMPTS: u32 = 50;
        let mut attempt = 1;
        let listener = loop {
            match TcpListener::bind(address).await {
                Ok(listener) => break listener,
                Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && attempt < BIND_ATTEMPTS => {
                    tracing::warn!(address, attempt, "address in use; retrying");
                    weir_core::rt::sleep(Duration::from_millis(200)).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        };
        Ok(TlsListener { listener, acceptor: TlsAcceptor::from(Arc::clone(&tls.server)) })
    }

    /// The bound address.
    pub fn local_address(&self) -> std::io::Result<String> {
        Ok(self.listener.local_addr()?.to_string())
    }

    /// Accepts the next peer that completes the handshake; refused peers are logged and skipped.
    pub async fn accept(&self) -> std::io::Result<(TlsStream, String)> {
        loop {
            let (tcp, peer) = self.listener.accept().await?;
            tcp.set_nodelay(true)?;
            match weir_core::rt::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(Link::new(tcp))).await {
                Ok(Ok(stream)) => return Ok((tokio_rustls::TlsStream::Server(stream), peer.to_string())),
                Ok(Err(error)) => {
                    tracing::warn!(%peer, %error, "refused connection: TLS handshake failed (no valid certificate?)")
                }
                Err(_) => tracing::warn!(%peer, "refused connection: TLS handshake timed out"),
            }
        }
    }
}
