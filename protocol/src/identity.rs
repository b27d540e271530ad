//! Who is asking: the readers a client certificate may ask for.
//!
//! The certificate's URI subject alternative names carry the grant:
//!
//! | URI SAN | may ask for |
//! | --- | --- |
//! | `urn:accessd:reader:<id>` | reader `<id>` (repeat for several) |
//! | `urn:accessd:reader-prefix:<p>` | every reader whose id starts with `<p>` (a gateway fronting one building) |
//! | `urn:accessd:all-readers` | every reader (a site gateway, the load generator) |
//!
//! A certificate with none of these names no reader: the server closes the
//! connection right after the handshake.

use std::collections::HashSet;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// URI SAN prefix naming one reader.
pub const SAN_READER: &str = "urn:accessd:reader:";
/// URI SAN prefix naming a reader id prefix.
pub const SAN_READER_PREFIX: &str = "urn:accessd:reader-prefix:";
/// URI SAN naming every reader.
pub const SAN_ALL_READERS: &str = "urn:accessd:all-readers";

/// The readers one client may ask for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReaderScope {
    all: bool,
    readers: HashSet<String>,
    prefixes: Vec<String>,
    /// Who the certificate names (recorded in access events).
    identity: String,
}

impl ReaderScope {
    /// Every reader.
    pub fn all() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    /// Exactly these readers.
    pub fn readers<I: IntoIterator<Item = S>, S: Into<String>>(ids: I) -> Self {
        Self {
            readers: ids.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Who the client is: its certificate's subject common name, else its
    /// first URI SAN, else empty.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The same scope, naming the client `identity`.
    pub fn with_identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = identity.into();
        self
    }

    /// Whether the scope names no reader at all.
    pub fn is_empty(&self) -> bool {
        !self.all && self.readers.is_empty() && self.prefixes.is_empty()
    }

    /// Whether the client may ask for `reader`.
    pub fn permits(&self, reader: &str) -> bool {
        self.all
            || self.readers.contains(reader)
            || self.prefixes.iter().any(|p| reader.starts_with(p.as_str()))
    }

    /// Adds what one URI SAN grants; other URIs are ignored.
    fn add_uri(&mut self, uri: &str) {
        if uri == SAN_ALL_READERS {
            self.all = true;
        } else if let Some(id) = uri.strip_prefix(SAN_READER_PREFIX) {
            // An empty prefix would mean "all" by accident; refuse it.
            if !id.is_empty() {
                self.prefixes.push(id.to_owned());
            }
        } else if let Some(id) = uri.strip_prefix(SAN_READER)
            && !id.is_empty()
        {
            self.readers.insert(id.to_owned());
        }
    }

    /// The scope of a DER certificate (the client's end-entity one, already
    /// verified by TLS).
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Unparsable)?;
        let mut scope = Self::default();
        let san = cert
            .subject_alternative_name()
            .map_err(|_| IdentityError::Unparsable)?;
        let mut first_uri = None;
        if let Some(san) = san {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name {
                    first_uri.get_or_insert(*uri);
                    scope.add_uri(uri);
                }
            }
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok());
        scope.identity = common_name.or(first_uri).unwrap_or_default().to_owned();
        if scope.is_empty() {
            return Err(IdentityError::NoReaders);
        }
        Ok(scope)
    }
}

/// Why a client certificate gives no reader scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The client presented no certificate (the TLS config requires one,
    /// so this is a configuration bug).
    #[error("the client presented no certificate")]
    NoCertificate,
    /// The certificate or its SAN extension could not be parsed.
    #[error("the client certificate cannot be parsed")]
    Unparsable,
    /// No URI SAN names a reader. Fix: issue the certificate with
    /// `urn:accessd:reader:<id>` (or a gateway form).
    #[error("the client certificate names no reader (no `urn:accessd:` URI SAN)")]
    NoReaders,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let mut s = ReaderScope::default();
        s.add_uri("urn:accessd:reader:a");
        s.add_uri("urn:accessd:reader-prefix:nyc-");
        s.add_uri("urn:accessd:reader-prefix:");
        s.add_uri("https://example.invalid/");
        assert!(s.permits("a"));
        assert!(s.permits("nyc-d00001-in"));
        assert!(!s.permits("b"));
        assert!(!s.permits("lon-d00001-in"));
        assert!(ReaderScope::all().permits("anything"));
        assert!(ReaderScope::default().is_empty());
    }
}
