//! Certificate authorities trusted besides the system's (`--ca FILE`), for a fleet or an origin
//! whose certificates a private CA signs.
//!
//! They are added to the system's store, not put in its place: an agent fetches from public
//! origins and from its private fleet at once, and a `shoal get` may name a public mirror beside
//! a private origin. So `--ca` does what a CA in Docker's `certs.d` or in containerd's
//! `hosts.toml` does, not what curl's `--cacert` does (which replaces curl's bundle).

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use thiserror::Error;

/// Why a `--ca` file cannot be used.
#[derive(Debug, Error)]
#[error("{}: {what}; give a PEM file of one or more CA certificates (-----BEGIN CERTIFICATE-----)", path.display())]
pub struct CaError {
    /// The file.
    pub path: PathBuf,
    /// What was wrong: unreadable, not PEM, or no certificate in it.
    pub what: String,
}

/// The certificates of a `--ca` file, trusted besides the system's. Cheap to clone.
#[derive(Clone)]
pub struct ExtraRoots {
    path: Arc<Path>,
    certs: Arc<[reqwest::Certificate]>,
}

impl std::fmt::Debug for ExtraRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraRoots")
            .field("path", &self.path)
            .field("certificates", &self.certs.len())
            .finish()
    }
}

impl ExtraRoots {
    /// Reads every `CERTIFICATE` in the PEM file at `path`; a file that cannot be read, does
    /// not parse or holds none is an error naming it.
    pub fn from_pem_file(path: &Path) -> Result<Self, CaError> {
        let error = |what: String| CaError {
            path: path.to_path_buf(),
            what,
        };
        let ders = CertificateDer::pem_file_iter(path)
            .map_err(|e| error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(e.to_string()))?;
        if ders.is_empty() {
            return Err(error("no CERTIFICATE in it".into()));
        }
        let certs = ders
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(e.to_string()))?;
        Ok(Self {
            path: path.into(),
            certs: certs.into(),
        })
    }

    /// The certificates of `--ca`, if it was given.
    pub fn load(path: Option<&Path>) -> Result<Option<Self>, CaError> {
        path.map(Self::from_pem_file).transpose()
    }

    /// `builder` trusting these certificates besides the system's (left to the builder).
    fn trusted_by(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        builder.tls_certs_merge(self.certs.iter().cloned())
    }
}

/// A client builder that trusts `roots`, if any, besides the system's CAs, with rustls on
/// ring as its TLS (installed as the process's provider here, so that no client of shoal's
/// is built without one).
///
/// The system's CAs are those its platform verifier would read (`SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, else the distribution's store), read once per process: reading and
/// decoding every PEM file at each client built cost an agent about 4 % of its CPU, since it
/// builds several clients per download. A CA installed later is trusted from the next start,
/// as by most daemons.
pub fn client_builder(roots: Option<&ExtraRoots>) -> reqwest::ClientBuilder {
    // Only one provider is compiled in; a second install attempt fails harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::Client::builder();
    match (system_roots(), roots) {
        (Some(system), roots) => builder.tls_certs_only(
            system
                .iter()
                .chain(roots.iter().flat_map(|r| r.certs.iter()))
                .cloned(),
        ),
        // None readable: the builder's own verifier reads the store and says what is wrong.
        (None, Some(roots)) => roots.trusted_by(builder),
        (None, None) => builder,
    }
}

/// The system's CA certificates, read on first use; `None` when none could be read.
fn system_roots() -> Option<&'static [reqwest::Certificate]> {
    static ROOTS: OnceLock<Option<Vec<reqwest::Certificate>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::debug!("reading the system's CA certificates: {error}");
            }
            let certs: Vec<_> = found
                .certs
                .iter()
                .filter_map(|der| reqwest::Certificate::from_der(der).ok())
                .collect();
            (!certs.is_empty()).then_some(certs)
        })
        .as_deref()
}

/// A request's failure with its causes, for a message; for a certificate no trusted CA signed,
/// also what cures it.
pub fn describe(error: &reqwest::Error) -> String {
    let chain = shoal_core::chain::chain(error);
    if is_untrusted_certificate(error) {
        format!(
            "its certificate is not signed by a trusted CA ({chain}); pass --ca FILE with the \
             CA that signed it"
        )
    } else {
        chain
    }
}

/// True when `error`, or one of its causes, is a server certificate no trusted CA signed: the
/// failure `--ca` cures.
pub fn is_untrusted_certificate(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        // An io::Error's `source` skips the error it wraps (itself perhaps another io::Error,
        // as the TLS connector nests them), so look inside each.
        let mut inner = Some(error);
        while let Some(candidate) = inner {
            if let Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )) = candidate.downcast_ref::<rustls::Error>()
            {
                return true;
            }
            inner = (candidate.downcast_ref::<std::io::Error>())
                .and_then(|io| io.get_ref())
                .map(|wrapped| wrapped as &(dyn StdError + 'static));
        }
        next = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_cannot_be_used_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for path in [&missing, &empty, &garbage] {
            let message = ExtraRoots::from_pem_file(path).unwrap_err().to_string();
            assert!(
                message.starts_with(&path.display().to_string()) && message.contains("PEM"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_bundle_gives_every_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let pem = |name: &str| {
            rcgen::generate_simple_self_signed(vec![name.to_owned()])
                .unwrap()
                .cert
                .pem()
        };
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, pem("a") + &pem("b")).unwrap();
        let roots = ExtraRoots::from_pem_file(&bundle).unwrap();
        assert_eq!(roots.certs.len(), 2);
    }
}
