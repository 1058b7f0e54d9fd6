//! A small certificate authority (rcgen) for the demo and the tests: a CA, and server and
//! client certificates it signs. Production deployments bring their own certificates; this
//! only makes the demo's TLS listener and HTTPS admin API work from a fresh data directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA that can sign certificates.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn err(e: rcgen::Error) -> String {
    format!("certificate generation: {e}")
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Result<Ca, String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.self_signed(&key).map_err(err)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Result<Issued, String> {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate named `name` (terminals and VANs under mutual TLS, the switch
    /// towards a host that requires one).
    pub fn client(&self, name: &str) -> Result<Issued, String> {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Result<Issued, String> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).map_err(err)?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Issued {
    /// Write `<stem>.pem` and `<stem>.key` (the key readable by the owner only) in `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), String> {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        write_file(&cert, &self.cert_pem, false)?;
        write_file(&key, &self.key_pem, true)?;
        Ok((cert, key))
    }
}

/// Write a file whole (replacing it), private ones with mode 0600.
pub fn write_file(path: &Path, text: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts
        .open(path)
        .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

/// The demo's TLS files under `<data-dir>/tls/`.
pub struct DemoPki {
    pub dir: PathBuf,
    /// The CA clients trust (`cyberswitch api --ca`, `send --tls`, `load --tls-ca`).
    pub ca: PathBuf,
    /// The switch's server certificate (terminal listener and admin API) and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl DemoPki {
    pub fn paths(data_dir: &Path) -> DemoPki {
        let dir = data_dir.join("tls");
        DemoPki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            dir,
        }
    }

    /// The demo's CA and server certificate (for `127.0.0.1` and `localhost`): made once per
    /// data directory and reused on later starts, so that a client trusting `ca.pem` keeps
    /// working. When any of the three files is missing, all three are made anew (the CA's
    /// key is not kept: the demo signs nothing after the first start).
    pub fn ensure(data_dir: &Path) -> Result<DemoPki, String> {
        let paths = DemoPki::paths(data_dir);
        if paths.ca.exists() && paths.cert.exists() && paths.key.exists() {
            return Ok(paths);
        }
        std::fs::create_dir_all(&paths.dir)
            .map_err(|e| format!("{}: cannot create: {e}", paths.dir.display()))?;
        let ca = Ca::new("cyberswitch demo CA")?;
        ca.server(&["127.0.0.1", "localhost"])?
            .write(&paths.dir, "server")?;
        write_file(&paths.ca, ca.cert_pem(), false)?;
        Ok(paths)
    }
}
