//! TLS connections over TCP: the one way cluster processes talk.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weir_core::faultpoint::{LinkDirection, LinkFault};

use tokio::sync::mpsc;

use crate::tls::{server_name, PeerIdentity, Role, TlsContext};

/// A TLS stream to a peer, either side.
pub type TlsStream = tokio_rustls::TlsStream<Link>;

/// A TCP connection under TLS. It is the seam through which the simulator resets, stalls and
/// slows single connections (a TCP RST, a one-way black hole, a slow path, with both processes
/// alive); in production it is the bare stream.
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
        if std::task::ready!(link.fault.poll_write_gate(cx)) {
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
        if std::task::ready!(link.fault.poll_write_gate(cx)) {
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

/// How long a TCP connect, and then a TLS handshake, may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes a listener runs at once; beyond them, accepting waits (each handshake ends within
/// [`HANDSHAKE_TIMEOUT`]).
const HANDSHAKES_MAX: usize = 512;
/// Handshakes one peer address may have in progress at once; a connection beyond them is closed
/// at once (with a warning), so that peers that connect and never speak hold up only themselves.
const HANDSHAKES_PER_ADDRESS_MAX: usize = 32;

/// The peer's certificate does not carry the role the caller needs: retrying cannot help.
#[derive(Debug)]
pub struct RoleRefused(pub String);

impl std::fmt::Display for RoleRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RoleRefused {}

/// Whether `error` is a [`RoleRefused`] (as opposed to any other failure to connect).
pub fn is_role_refusal(error: &std::io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<RoleRefused>())
}

/// The identity of the peer on a TLS stream (its end-entity certificate).
fn peer_identity(stream: &TlsStream) -> PeerIdentity {
    match stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()) {
        Some(certificate) => PeerIdentity::from_certificate(certificate.as_ref()),
        None => PeerIdentity { role: None, subject: "(no certificate)".into() },
    }
}

/// Connects to `address`, completes the mutual-TLS handshake, and checks that the peer holds a
/// certificate of role `expected` (a worker trusts only the coordinator as its coordinator).
pub async fn connect(tls: &TlsContext, address: &str, expected: Role) -> std::io::Result<TlsStream> {
    let name =
        server_name(address).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let tcp = weir_core::rt::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(address)).await.map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connecting to {address} timed out"))
    })??;
    tcp.set_nodelay(true)?;
    let connector = TlsConnector::from(tls.client.clone());
    let stream =
        weir_core::rt::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, Link::new(tcp))).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, format!("TLS handshake with {address} timed out"))
        })??;
    let stream = tokio_rustls::TlsStream::Client(stream);
    let identity = peer_identity(&stream);
    if let Err(reason) = identity.require(expected, &format!("serve as the {expected} at {address}")) {
        tracing::warn!(%address, subject = %identity.subject, "refused peer: {reason}");
        return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, RoleRefused(reason)));
    }
    Ok(stream)
}

/// A connection that completed the TLS handshake.
pub struct Accepted {
    /// The stream.
    pub stream: TlsStream,
    /// The peer's address.
    pub address: String,
    /// Who the peer's certificate says it is.
    pub peer: PeerIdentity,
}

/// Accepts TLS connections on a listener. Handshakes run off the accept loop, each within
/// [`HANDSHAKE_TIMEOUT`], at most [`HANDSHAKES_PER_ADDRESS_MAX`] per peer address: peers that
/// connect and say nothing delay no one else.
pub struct TlsListener {
    address: String,
    accepted: mpsc::UnboundedReceiver<Accepted>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
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
        let address = listener.local_addr()?.to_string();
        let (sender, accepted) = mpsc::unbounded_channel();
        let acceptor = TlsAcceptor::from(Arc::clone(&tls.server));
        let task = tokio::spawn(accept_loop(listener, acceptor, sender));
        Ok(TlsListener { address, accepted, task })
    }

    /// The bound address.
    pub fn local_address(&self) -> String {
        self.address.clone()
    }

    /// The next peer that completed the handshake; refused peers are logged and skipped.
    pub async fn accept(&mut self) -> Accepted {
        self.accepted.recv().await.expect("the accept loop lives as long as the listener")
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, accepted: mpsc::UnboundedSender<Accepted>) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
    let per_address: Arc<std::sync::Mutex<std::collections::BTreeMap<std::net::IpAddr, usize>>> = Arc::default();
    loop {
        let (tcp, address) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Resource limits or a reset peer must not take the listener down.
                tracing::warn!(%error, "accept failed; retrying");
                weir_core::rt::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = HandshakeSlot::take(&per_address, address.ip()) else {
            tracing::warn!(
                %address,
                "refused connection: {HANDSHAKES_PER_ADDRESS_MAX} TLS handshakes from this address already in progress"
            );
            continue;
        };
        let permit = handshakes.clone().acquire_owned().await.expect("the semaphore is never closed");
        let (acceptor, accepted) = (acceptor.clone(), accepted.clone());
        tokio::spawn(async move {
            let (_permit, _slot) = (permit, slot);
            let _ = tcp.set_nodelay(true);
            match weir_core::rt::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(Link::new(tcp))).await {
                Ok(Ok(stream)) => {
                    let stream = tokio_rustls::TlsStream::Server(stream);
                    let peer = peer_identity(&stream);
                    let _ = accepted.send(Accepted { stream, address: address.to_string(), peer });
                }
                Ok(Err(error)) => {
                    tracing::warn!(%address, %error, "refused connection: TLS handshake failed (no valid certificate?)")
                }
                Err(_) => tracing::warn!(%address, "refused connection: TLS handshake timed out"),
            }
        });
    }
}

/// One handshake in progress from a peer address, counted while it lives.
struct HandshakeSlot {
    counts: Arc<std::sync::Mutex<std::collections::BTreeMap<std::net::IpAddr, usize>>>,
    address: std::net::IpAddr,
}

impl HandshakeSlot {
    /// A slot for `address`, unless it has [`HANDSHAKES_PER_ADDRESS_MAX`] already.
    fn take(
        counts: &Arc<std::sync::Mutex<std::collections::BTreeMap<std::net::IpAddr, usize>>>,
        address: std::net::IpAddr,
    ) -> Option<Self> {
        let mut map = counts.lock().expect("handshake counts");
        let count = map.entry(address).or_insert(0);
        if *count >= HANDSHAKES_PER_ADDRESS_MAX {
            return None;
        }
        *count += 1;
        Some(HandshakeSlot { counts: counts.clone(), address })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().expect("handshake counts");
        if let Some(count) = map.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::init_certs;

    /// Ten peers that connect and never speak must not delay an eleventh that completes its
    /// handshake: handshakes run off the accept loop. (Were they run in turn, each silent peer
    /// would hold the listener for the whole handshake timeout; the bound below is a liveness
    /// bound far under ten such timeouts, not a speed requirement.)
    #[test]
    fn silent_peers_do_not_delay_a_real_one() {
        let dir = tempfile::tempdir().unwrap();
        init_certs(dir.path(), &["127.0.0.1".to_string()]).unwrap();
        let coordinator = TlsContext::load(dir.path(), Role::Coordinator).unwrap();
        let worker = TlsContext::load(dir.path(), Role::Worker).unwrap();
        weir_core::rt::block_on(async move {
            let mut listener = TlsListener::bind(&coordinator, "127.0.0.1:0").await.unwrap();
            let address = listener.local_address();
            let mut silent = Vec::new();
            for _ in 0..10 {
                silent.push(TcpStream::connect(&address).await.unwrap());
            }
            let connecting = tokio::spawn({
                let address = address.clone();
                async move { connect(&worker, &address, Role::Coordinator).await.map(|_| ()) }
            });
            let accepted = weir_core::rt::timeout(HANDSHAKE_TIMEOUT * 2, listener.accept()).await;
            let accepted = accepted.expect("a real peer is accepted while silent ones wait");
            assert_eq!(accepted.peer.role, Some(Role::Worker));
            assert!(accepted.peer.subject.contains("weir-worker"), "{}", accepted.peer.subject);
            connecting.await.unwrap().unwrap();
            drop(silent);
        });
    }

    /// A peer whose certificate has the wrong role is refused by the side that connects.
    #[test]
    fn a_connection_checks_the_role_of_the_peer_it_reaches() {
        let dir = tempfile::tempdir().unwrap();
        init_certs(dir.path(), &["127.0.0.1".to_string()]).unwrap();
        let worker = TlsContext::load(dir.path(), Role::Worker).unwrap();
        let other_worker = worker.clone();
        weir_core::rt::block_on(async move {
            let mut listener = TlsListener::bind(&worker, "127.0.0.1:0").await.unwrap();
            let address = listener.local_address();
            tokio::spawn(async move {
                let _accepted = listener.accept().await;
                std::future::pending::<()>().await
            });
            // A worker's data listener is no coordinator.
            let error = connect(&other_worker, &address, Role::Coordinator).await.unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
            assert!(error.to_string().contains("role worker"), "{error}");
        });
    }
}
