//! A development certificate authority (feature `dev-ca`): a server
//! certificate and reader certificates in one call, for trying accessd out
//! and for tests. A production site uses its own PKI.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use super::{TlsCredentials, TlsError};

fn gen_err(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// A certificate and its key, as PEM.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key (PKCS#8), PEM.
    pub key_pem: String,
}

/// A development certificate authority: issues a server certificate and
/// reader (client) certificates. For trying accessd out and for tests; a
/// production site uses its own PKI.
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new CA with a fresh key.
    pub fn new(name: &str) -> Result<Self, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(gen_err)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(gen_err)?;
        Ok(Self { issuer })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<IssuedCert, TlsError> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(gen_err)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A server certificate for these DNS names or IP addresses.
    pub fn server(&self, names: &[&str]) -> Result<IssuedCert, TlsError> {
        let sans = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*n).try_into().map_err(gen_err)?)),
            })
            .collect::<Result<Vec<_>, TlsError>>()?;
        self.issue("accessd server", sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with these URI SANs (see
    /// [`ReaderScope`](crate::ReaderScope) for the forms).
    pub fn client(&self, common_name: &str, uris: &[String]) -> Result<IssuedCert, TlsError> {
        let sans = uris
            .iter()
            .map(|u| Ok(SanType::URI(u.as_str().try_into().map_err(gen_err)?)))
            .collect::<Result<Vec<_>, TlsError>>()?;
        self.issue(common_name, sans, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// TLS credentials for one end, trusting this CA.
    pub fn credentials(&self, issued: &IssuedCert) -> Result<TlsCredentials, TlsError> {
        TlsCredentials::from_pem(&self.cert_pem(), &issued.cert_pem, &issued.key_pem)
    }
}
