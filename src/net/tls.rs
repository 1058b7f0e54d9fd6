//! TLS (SPEC §10) with rustls and its ring provider: no OpenSSL, nothing to install.
//!
//! - [`ServerTls`]: a listener's (terminals, VAN, the admin API) certificate chain and key,
//!   and, when configured, the CA its clients' certificates must chain to (mutual TLS: a
//!   client without one is refused during the handshake).
//! - [`ClientTls`]: an upstream link's trusted CA, optional client certificate, and the name
//!   the server's certificate must carry (SNI and the hostname check; by default the host
//!   part of the link's address, a DNS name or an IP address).
//!
//! Both read their files at load (errors name the file and the reason, never the contents)
//! and again on [`reload`](ServerTls::reload) (SIGHUP): new connections use what was read
//! last; a reload that fails keeps the previous material and says why. Connections already
//! open keep the keys they were set up with.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long a peer has to complete a handshake. A peer that connects and says nothing holds
/// one of the listener's places: it loses it after this, not after the idle timeout.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `tls = { cert = …, key = …, client_ca = … }` on a listener or the admin API.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsFiles {
    /// The certificate chain (PEM), the listener's own certificate first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Clients must present a certificate chaining to one in this file (PEM).
    pub client_ca: Option<PathBuf>,
}

/// `tls = { ca = …, cert = …, key = …, server_name = … }` on an upstream link.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsFiles {
    /// The CA certificates (PEM) the host's certificate must chain to. The system's roots are
    /// never trusted: a link trusts exactly what its configuration names.
    pub ca: PathBuf,
    /// The switch's client certificate chain (PEM), for hosts that require one.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM); given with `cert` or not at all.
    pub key: Option<PathBuf>,
    /// The name the host's certificate must carry, sent as SNI; by default the host part of
    /// each address in `hosts`.
    pub server_name: Option<String>,
}

/// The crypto provider, named rather than left to the process default, so that nothing
/// depends on which provider another crate may have installed. rustls 0.23.48 marks ring's
/// provider deprecated because it has no post-quantum key exchange; aws-lc-rs has one but
/// builds a large C library (cmake, minutes on this project's two cores). Ring it is, until
/// the switch to aws-lc-rs is made on purpose (docs/decisions.md).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The file's bytes, or why not (the path named).
fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

/// Every certificate in a PEM file; at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate (no \"BEGIN CERTIFICATE\" section)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file. The error never quotes the file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => format!(
            "{}: no private key (no \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" section)",
            path.display()
        ),
        _ => format!("{}: not a PEM private key", path.display()),
    })
}

/// A trust store holding exactly the certificates of one file.
fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for cert in read_certs(path)? {
        store
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(store)
}

fn server_config(files: &ServerTlsFiles) -> Result<ServerConfig, String> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "{} with {}: the key does not go with the certificate or is not usable: {e}",
            files.cert.display(),
            files.key.display()
        )
    })
}

fn client_config(files: &ClientTlsFiles) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(&files.ca)?);
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| {
                format!(
                    "{} with {}: the key does not go with the certificate or is not usable: {e}",
                    cert.display(),
                    key.display()
                )
            }),
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err("a client certificate needs both cert and key".into()),
    }
}

/// What a listener serves TLS with; reloadable.
pub struct ServerTls {
    files: ServerTlsFiles,
    current: RwLock<TlsAcceptor>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish()
    }
}

impl ServerTls {
    /// Read the files now; an error names the file and the reason.
    pub fn load(files: ServerTlsFiles) -> Result<Arc<ServerTls>, String> {
        let config = server_config(&files)?;
        Ok(Arc::new(ServerTls {
            files,
            current: RwLock::new(TlsAcceptor::from(Arc::new(config))),
        }))
    }

    /// The acceptor for a new connection: what was read last.
    pub fn acceptor(&self) -> TlsAcceptor {
        match self.current.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Read the files again; on success new connections use them, on failure the previous
    /// ones stay.
    pub fn reload(&self) -> Result<(), String> {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(&self.files)?));
        match self.current.write() {
            Ok(mut a) => *a = acceptor,
            Err(poisoned) => *poisoned.into_inner() = acceptor,
        }
        Ok(())
    }

    pub fn requires_client_certificate(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The handshake of an accepted connection, bounded by [`HANDSHAKE_TIMEOUT`].
    pub async fn accept<S>(&self, stream: S) -> Result<tokio_rustls::server::TlsStream<S>, String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor().accept(stream)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
            Err(_) => Err("TLS handshake: timed out".into()),
        }
    }
}

/// What an upstream link connects with; reloadable.
pub struct ClientTls {
    files: ClientTlsFiles,
    current: RwLock<TlsConnector>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.files)
            .finish()
    }
}

impl ClientTls {
    /// Read the files now; an error names the file and the reason.
    pub fn load(files: ClientTlsFiles) -> Result<Arc<ClientTls>, String> {
        if let Some(name) = &files.server_name {
            ServerName::try_from(name.clone()).map_err(|e| format!("server_name {name:?}: {e}"))?;
        }
        let config = client_config(&files)?;
        Ok(Arc::new(ClientTls {
            files,
            current: RwLock::new(TlsConnector::from(Arc::new(config))),
        }))
    }

    fn connector(&self) -> TlsConnector {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Read the files again (a new CA, a renewed client certificate); on failure the
    /// previous ones stay.
    pub fn reload(&self) -> Result<(), String> {
        let connector = TlsConnector::from(Arc::new(client_config(&self.files)?));
        match self.current.write() {
            Ok(mut c) => *c = connector,
            Err(poisoned) => *poisoned.into_inner() = connector,
        }
        Ok(())
    }

    /// The name the server at `addr` (`host:port`) must prove: the configured one, else the
    /// host part of the address.
    pub fn server_name(&self, addr: &str) -> Result<ServerName<'static>, String> {
        let name = match &self.files.server_name {
            Some(n) => n.clone(),
            None => host_of(addr).to_string(),
        };
        ServerName::try_from(name.clone()).map_err(|e| format!("server name {name:?}: {e}"))
    }

    /// The handshake over a connected stream to `addr`, bounded by [`HANDSHAKE_TIMEOUT`]:
    /// the server's certificate chains to the configured CA and carries the server name.
    pub async fn connect<S>(
        &self,
        addr: &str,
        stream: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>, String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = self.server_name(addr)?;
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.connector().connect(name, stream)).await
        {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
            Err(_) => Err("TLS handshake: timed out".into()),
        }
    }
}

/// `host` of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((host, _)) => host,
        None => addr,
    }
}

/// A byte stream that may or may not be TLS, for the clients (`send`, `load`, the CLI's
/// API client) that take either.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A TCP connection to `addr`, over TLS when `ca` is given (the server's certificate must
/// chain to it and name the host of `addr`).
pub async fn connect(addr: &str, ca: Option<&Path>) -> Result<Box<dyn Io>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    match ca {
        None => Ok(Box::new(stream)),
        Some(ca) => {
            let tls = ClientTls::load(ClientTlsFiles {
                ca: ca.to_path_buf(),
                cert: None,
                key: None,
                server_name: None,
            })?;
            let s = tls
                .connect(addr, stream)
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            Ok(Box::new(s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_address() {
        assert_eq!(host_of("127.0.0.1:9101"), "127.0.0.1");
        assert_eq!(host_of("issuer.example:9101"), "issuer.example");
        assert_eq!(host_of("[::1]:9101"), "::1");
        assert_eq!(host_of("issuer.example"), "issuer.example");
    }

    #[test]
    fn errors_name_the_file_and_never_quote_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.pem");
        let e = read_certs(&missing).unwrap_err();
        assert!(e.contains("absent.pem") && e.contains("cannot read"), "{e}");
        let garbage = dir.path().join("key.pem");
        std::fs::write(&garbage, "SECRETSECRETSECRET\n").unwrap();
        let e = read_key(&garbage).unwrap_err();
        assert!(e.contains("key.pem") && !e.contains("SECRET"), "{e}");
        let e = read_certs(&garbage).unwrap_err();
        assert!(e.contains("no certificate") && !e.contains("SECRET"), "{e}");
    }
}
