//! Mutual TLS for every connection of the cluster: control RPC, data exchange and clients.
//!
//! Every peer presents a certificate signed by the cluster's CA and verifies the other side's;
//! a peer without one is refused during the handshake, and the refusal is logged. A
//! certificate also carries its **role** — coordinator, worker or client — as a URI in its
//! subject alternative names (`urn:weir:role:worker`), and an extended key usage to match (a
//! client certificate is for clients only, so it cannot even serve TLS). A CA signature says
//! "one of ours"; the role says what the peer may do: only a worker registers or opens data
//! connections, only a client submits or cancels, and a worker or client trusts only the
//! coordinator's certificate as its coordinator ([`PeerIdentity`], checked by every listener).
//!
//! `weir certs init DIR` creates a development CA and one certificate per role for the given
//! host names. Private keys are written with mode 0600; the CA's key goes to `DIR/ca/`, apart
//! from what the nodes load, because whoever holds it can mint any role. rustls runs with the
//! `ring` provider only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
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
    const ALL: [Role; 3] = [Role::Coordinator, Role::Worker, Role::Client];

    fn file_stem(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
            Role::Client => "client",
        }
    }

    /// The URI naming the role in a certificate's subject alternative names.
    pub fn uri(self) -> String {
        format!("urn:weir:role:{}", self.file_stem())
    }

    fn from_uri(uri: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.uri() == uri)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.file_stem())
    }
}

/// Who is on the other end of a verified connection: its certificate's role (if it names
/// exactly one) and subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The role its certificate carries; `None` for a certificate without a Weir role (made by
    /// an older `weir certs init`, or by hand) or with several.
    pub role: Option<Role>,
    /// The certificate's subject, for logs.
    pub subject: String,
}

impl PeerIdentity {
    /// Reads the identity from the peer's end-entity certificate (DER).
    pub fn from_certificate(der: &[u8]) -> PeerIdentity {
        let Ok((_, certificate)) = x509_parser::parse_x509_certificate(der) else {
            return PeerIdentity { role: None, subject: "(unparsable certificate)".into() };
        };
        let subject = certificate.subject().to_string();
        let roles: Vec<Role> = match certificate.subject_alternative_name() {
            Ok(Some(names)) => names
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::URI(uri) => Role::from_uri(uri),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let role = match roles.as_slice() {
            [role] => Some(*role),
            _ => None,
        };
        PeerIdentity { role, subject }
    }

    /// `Ok` if the peer holds `expected`'s certificate; otherwise why not, for the refusal.
    pub fn require(&self, expected: Role, to: &str) -> Result<(), String> {
        match self.role {
            Some(role) if role == expected => Ok(()),
            Some(role) => Err(format!(
                "certificate {} has role {role}; only a {expected} certificate may {to}",
                self.subject
            )),
            None => Err(format!(
                "certificate {} carries no Weir role; only a {expected} certificate may {to} (create role certificates with `weir certs init`)",
                self.subject
            )),
        }
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.role {
            Some(role) => write!(f, "{} ({role})", self.subject),
            None => write!(f, "{} (no role)", self.subject),
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
/// `dir`; the CA's key goes to `dir/ca/`. Returns the files written.
#[allow(clippy::disallowed_methods)] // TLS material is configuration, not engine data: plain files
pub fn init_certs(dir: &Path, hosts: &[String]) -> Result<Vec<PathBuf>, TlsError> {
    let config_error = |e: rcgen::Error| TlsError::Config(format!("certificate generation: {e}"));
    let ca_dir = dir.join("ca");
    for directory in [dir, &ca_dir] {
        create_private_dir(directory)
            .map_err(|e| TlsError::File { path: directory.to_path_buf(), reason: e.to_string() })?;
    }
    let mut written = Vec::new();
    let mut write = |path: PathBuf, content: String, private: bool| -> Result<(), TlsError> {
        let file_error = |reason: String| TlsError::File { path: path.clone(), reason };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if private { 0o600 } else { 0o644 });
        }
        let _ = private;
        let mut file = options.open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                file_error("already exists; remove the directory's files first".into())
            }
            _ => file_error(e.to_string()),
        })?;
        std::io::Write::write_all(&mut file, content.as_bytes()).map_err(|e| file_error(e.to_string()))?;
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
    write(dir.join("ca.pem"), ca_cert.pem(), false)?;
    write(ca_dir.join("ca.pem"), ca_cert.pem(), false)?;
    write(ca_dir.join("ca.key"), ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca_params, ca_key);
    for role in Role::ALL {
        let key = KeyPair::generate().map_err(config_error)?;
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(config_error)?;
        let uri = rcgen::string::Ia5String::try_from(role.uri()).map_err(config_error)?;
        params.subject_alt_names.push(SanType::URI(uri));
        // A client never serves TLS; the coordinator never connects out; a worker does both.
        params.extended_key_usages = match role {
            Role::Coordinator => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Role::Worker => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, format!("weir-{}", role.file_stem()));
        params.distinguished_name = name;
        let cert = params.signed_by(&key, &issuer).map_err(config_error)?;
        write(dir.join(format!("{}.pem", role.file_stem())), cert.pem(), false)?;
        write(dir.join(format!("{}.key", role.file_stem())), key.serialize_pem(), true)?;
    }
    Ok(written)
}

/// Creates `dir` (and parents) with mode 0700 for the directory itself.
#[allow(clippy::disallowed_methods)] // TLS material is configuration, not engine data
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_certificate_names_exactly_its_role() {
        let dir = tempfile::tempdir().unwrap();
        init_certs(dir.path(), &["localhost".to_string()]).unwrap();
        for role in Role::ALL {
            let certificate = read_certs(&dir.path().join(format!("{}.pem", role.file_stem()))).unwrap();
            let identity = PeerIdentity::from_certificate(certificate[0].as_ref());
            assert_eq!(identity.role, Some(role));
            assert!(identity.subject.contains(&format!("weir-{role}")), "{}", identity.subject);
            assert!(identity.require(role, "act").is_ok());
        }
        let client = read_certs(&dir.path().join("client.pem")).unwrap();
        let refusal = PeerIdentity::from_certificate(client[0].as_ref()).require(Role::Worker, "register").unwrap_err();
        assert!(refusal.contains("role client") && refusal.contains("only a worker"), "{refusal}");
        let ca = read_certs(&dir.path().join("ca.pem")).unwrap();
        let none = PeerIdentity::from_certificate(ca[0].as_ref());
        assert_eq!(none.role, None);
        assert!(none.require(Role::Client, "submit").unwrap_err().contains("carries no Weir role"));
        assert_eq!(PeerIdentity::from_certificate(b"not a certificate").role, None);
    }
}
