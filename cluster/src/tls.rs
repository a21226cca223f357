//! Mutual TLS for every connection of the cluster: control RPC, data exchange and clients.
//!
//! Every peer presents a certificate signed by the cluster's CA and verifies the other side's;
//! a peer without one is refused during the handshake, and the refusal is logged. `weir certs
//! init DIR` creates a development CA and one certificate per role (coordinator, worker,
//! client) for the given host names. rustls runs with the `ring` provider only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use thiserror::Error;

/// Which certificate a process presents.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The coordinator (server for workers and clients).
    Coordinator,
    /// A worker (client of the coordinator; server and client of other workers' data plane).
    Worker,
    /// A command-line client (`weir job …`).
    Client,
}

impl Role {
    fn file_stem(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
            Role::Client => "client",
        }
    }
}

/// TLS material could not be created or loaded.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file is missing or unreadable.
    #[error("TLS: {path}: {reason}; create the files with `weir certs init DIR`")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The material is inconsistent.
    #[error("TLS: {0}")]
    Config(String),
}

/// The TLS configuration of one process.
#[derive(Clone)]
pub struct TlsContext {
    /// Accepts peers whose certificates the CA signed, and only those.
    pub server: Arc<ServerConfig>,
    /// Connects presenting this process's certificate, trusting only the CA.
    pub client: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsContext")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File { path: path.to_path_buf(), reason };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("no certificate in file".into()));
    }
    Ok(certs)
}

impl TlsContext {
    /// Loads `ca.pem`, `<role>.pem` and `<role>.key` from `dir`.
    pub fn load(dir: &Path, role: Role) -> Result<Self, TlsError> {
        let ca = read_certs(&dir.join("ca.pem"))?;
        let chain = read_certs(&dir.join(format!("{}.pem", role.file_stem())))?;
        let key_path = dir.join(format!("{}.key", role.file_stem()));
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| TlsError::File { path: key_path.clone(), reason: e.to_string() })?;
        Self::from_parts(ca, chain, key)
    }

    /// Builds the context from DER material.
    pub fn from_parts(
        ca: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots.add(cert).map_err(|e| TlsError::Config(format!("bad CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError::Config(format!("certificate and key do not match: {e}")))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Config(format!("certificate and key do not match: {e}")))?;
        Ok(TlsContext { server: Arc::new(server), client: Arc::new(client) })
    }
}

/// The server name to verify when connecting to `address` (`host:port`).
pub fn server_name(address: &str) -> Result<ServerName<'static>, TlsError> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| TlsError::Config(format!("address {address:?}: {e}")))
}

/// Creates a development CA and coordinator, worker and client certificates for `hosts` in
/// `dir`. Returns the files written.
pub fn init_certs(dir: &Path, hosts: &[String]) -> Result<Vec<PathBuf>, TlsError> {
    let config_error = |e: rcgen::Error| TlsError::Config(format!("certificate generation: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| TlsError::File { path: dir.to_path_buf(), reason: e.to_string() })?;
    let mut written = Vec::new();
    let mut write = |name: &str, content: String| -> Result<(), TlsError> {
        let path = dir.join(name);
        if path.exists() {
            return Err(TlsError::File { path, reason: "already exists; remove the directory's files first".into() });
        }
        std::fs::write(&path, content).map_err(|e| TlsError::File { path: path.clone(), reason: e.to_string() })?;
        written.push(path);
        Ok(())
    };
    let ca_key = KeyPair::generate().map_err(config_error)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(config_error)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Weir development CA");
    ca_params.distinguished_name = name;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(config_error)?;
    write("ca.pem", ca_cert.pem())?;
    write("ca.key", ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca_params, ca_key);
    for role in [Role::Coordinator, Role::Worker, Role::Client] {
        let key = KeyPair::generate().map_err(config_error)?;
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(config_error)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, format!("weir-{}", role.file_stem()));
        params.distinguished_name = name;
        let cert = params.signed_by(&key, &issuer).map_err(config_error)?;
        write(&format!("{}.pem", role.file_stem()), cert.pem())?;
        write(&format!("{}.key", role.file_stem()), key.serialize_pem())?;
    }
    Ok(written)
}
