//! The origin's TLS: a self-signed certificate made at start, which tests trust explicitly.

use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

pub(crate) struct Tls {
    pub acceptor: TlsAcceptor,
    pub cert_pem: String,
}

/// A certificate for `127.0.0.1` and `localhost` and an acceptor serving it.
///
/// # Panics
/// If rcgen or rustls reject their own defaults, which would be a bug in the kit.
pub(crate) fn self_signed() -> Tls {
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).expect("self-signed certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    // An explicit provider: the process-wide default may be unset or differ between tests.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("rcgen key matches its certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        cert_pem: certified.cert.pem(),
    }
}

/// A private certificate authority for tests: a self-signed CA certificate and the server
/// certificates it signs for `127.0.0.1` and `localhost`, as a fleet's own CA would sign its
/// trackers' and agents' certificates. Clients trust it only when told to (`--ca`).
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

/// PEM files of one server certificate and its key, as `--tls-cert` and `--tls-key` take them.
#[derive(Debug, Clone)]
pub struct ServerFiles {
    /// The certificate chain: the server's certificate, then the CA's.
    pub cert: std::path::PathBuf,
    /// The server's private key (PKCS #8).
    pub key: std::path::PathBuf,
}

impl TestCa {
    /// A new CA with a fresh key.
    ///
    /// # Panics
    /// If rcgen rejects its own defaults, which would be a bug in the kit.
    #[allow(clippy::new_without_default)] // Each call makes a new key: not a default value.
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "shoal test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        Self {
            issuer: rcgen::Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// The CA's certificate in PEM, what a client is given to trust (`--ca`).
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// Writes the CA's certificate to `path`.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn write_cert(&self, path: &std::path::Path) {
        std::fs::write(path, &self.pem).expect("writing the CA certificate");
    }

    /// A server certificate for `127.0.0.1` and `localhost` signed by this CA, written with its
    /// key into `dir` as `NAME.crt` (chain: the server's, then the CA's) and `NAME.key`.
    ///
    /// # Panics
    /// If rcgen fails or the files cannot be written.
    pub fn issue(&self, dir: &std::path::Path, name: &str) -> ServerFiles {
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let mut params = rcgen::CertificateParams::new(names).expect("valid names");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a signed certificate");
        let files = ServerFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem() + &self.pem).expect("writing the certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("writing the key");
        files
    }
}
