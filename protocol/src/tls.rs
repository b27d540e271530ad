//! TLS material and the rustls configurations of both ends: TLS 1.3 only,
//! the `ring` provider, ALPN `accessd/1`, client certificates required,
//! 0-RTT off. Plus, with the `dev-ca` feature, a development CA (rcgen)
//! for trying things out and for tests.

#[cfg(feature = "dev-ca")]
mod dev_ca;
#[cfg(feature = "dev-ca")]
pub use dev_ca::{DevCa, IssuedCert};

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN protocol id of this protocol's version 1.
pub const ALPN: &[u8] = b"accessd/1";

/// One end's TLS material: the CA that signs the other end, this end's
/// certificate chain and its private key.
#[derive(Debug)]
pub struct TlsCredentials {
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    /// `None` only for a client that presents no certificate (which the
    /// server refuses: kept for tests and diagnostics).
    key: Option<PrivateKeyDer<'static>>,
}

impl Clone for TlsCredentials {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.as_ref().map(PrivateKeyDer::clone_key),
        }
    }
}

impl TlsCredentials {
    /// From PEM text: the trusted CA certificate(s), this end's chain (leaf
    /// first) and its private key.
    pub fn from_pem(ca: &str, chain: &str, key: &str) -> Result<Self, TlsError> {
        let ca = CertificateDer::pem_slice_iter(ca.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem("ca", e.to_string()))?;
        let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem("certificate", e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|e| TlsError::Pem("key", e.to_string()))?;
        if ca.is_empty() {
            return Err(TlsError::Empty("ca"));
        }
        if chain.is_empty() {
            return Err(TlsError::Empty("certificate"));
        }
        Ok(Self {
            ca,
            chain,
            key: Some(key),
        })
    }

    /// A client that trusts `ca` but presents no certificate of its own.
    /// The server refuses it; this exists to check exactly that.
    pub fn without_client_certificate(ca: &str) -> Result<Self, TlsError> {
        let ca = CertificateDer::pem_slice_iter(ca.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem("ca", e.to_string()))?;
        if ca.is_empty() {
            return Err(TlsError::Empty("ca"));
        }
        Ok(Self {
            ca,
            chain: Vec::new(),
            key: None,
        })
    }

    /// From three PEM files.
    pub fn from_pem_files(ca: &Path, chain: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| TlsError::Read(p.display().to_string(), e.to_string()))
        };
        Self::from_pem(&read(ca)?, &read(chain)?, &read(key)?)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in &self.ca {
            roots
                .add(c.clone())
                .map_err(|e| TlsError::Config(e.to_string()))?;
        }
        Ok(Arc::new(roots))
    }

    /// The rustls server configuration: client certificates signed by the
    /// CA required, TLS 1.3, no early data.
    pub(crate) fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = self.key.as_ref().ok_or(TlsError::Empty("key"))?.clone_key();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots()?,
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        // A replayed unlock is an attack: never accept 0-RTT data.
        config.max_early_data_size = 0;
        config.send_half_rtt_data = false;
        Ok(config)
    }

    /// The rustls client configuration.
    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots()?);
        let mut config = match &self.key {
            Some(key) => builder
                .with_client_auth_cert(self.chain.clone(), key.clone_key())
                .map_err(|e| TlsError::Config(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.enable_early_data = false;
        Ok(config)
    }
}

/// Why TLS material could not be loaded or configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read. Fix the path or its permissions.
    #[error("cannot read `{0}`: {1}")]
    Read(String, String),
    /// PEM text could not be parsed.
    #[error("bad PEM in the {0}: {1}")]
    Pem(&'static str, String),
    /// A PEM input held no certificate.
    #[error("no certificate in the {0}")]
    Empty(&'static str),
    /// rustls refused the material (wrong key for the certificate, ...).
    #[error("TLS configuration refused: {0}")]
    Config(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
}
