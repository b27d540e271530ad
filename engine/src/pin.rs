//! PINs, stored only as salted hashes and compared in constant time.
//!
//! The text form is `sha256:SALT:DIGEST` with a 16-byte salt and the 32-byte
//! SHA-256 of `salt || pin`, both in hex. A PIN has 4 to 12 decimal digits.
//!
//! Why a fast hash and not a password hash: a decision must take
//! microseconds, and a 4-to-12-digit PIN cannot resist an offline search
//! whatever the hash. The salt stops precomputed tables across credentials;
//! the real protection is keeping the table and snapshots private.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest PIN accepted.
pub const MIN_PIN_DIGITS: usize = 4;
/// Longest PIN accepted.
pub const MAX_PIN_DIGITS: usize = 12;

/// A salted PIN hash.
#[derive(Clone, PartialEq, Eq)]
pub struct PinHash {
    salt: [u8; 16],
    digest: [u8; 32],
}

/// Why a PIN or a PIN hash was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// The PIN is not 4 to 12 decimal digits.
    #[error("a PIN must be 4 to 12 decimal digits")]
    BadPin,
    /// The stored hash is not `sha256:SALT:DIGEST` with a 16-byte salt and a
    /// 32-byte digest in hex.
    #[error("PIN hash `{0}` is not `sha256:SALT:DIGEST` (16-byte salt, 32-byte digest, hex)")]
    BadHash(String),
}

/// Whether `pin` has the shape of a PIN: 4 to 12 ASCII digits.
pub fn is_valid_pin(pin: &[u8]) -> bool {
    (MIN_PIN_DIGITS..=MAX_PIN_DIGITS).contains(&pin.len()) && pin.iter().all(u8::is_ascii_digit)
}

impl PinHash {
    /// Hashes `pin` with `salt`. The salt need not be secret, only
    /// different for each credential.
    pub fn new(pin: &str, salt: [u8; 16]) -> Result<Self, PinError> {
        if !is_valid_pin(pin.as_bytes()) {
            return Err(PinError::BadPin);
        }
        Ok(Self {
            salt,
            digest: digest(&salt, pin.as_bytes()),
        })
    }

    /// Whether `pin` matches, in time that does not depend on where the
    /// digests differ.
    pub fn verify(&self, pin: &[u8]) -> bool {
        if !is_valid_pin(pin) {
            return false;
        }
        let candidate = digest(&self.salt, pin);
        // `subtle` keeps the comparison branch-free and out of the
        // optimiser's reach, which a hand-written fold cannot promise.
        candidate.ct_eq(&self.digest).into()
    }
}

fn digest(salt: &[u8; 16], pin: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(pin);
    hasher.finalize().into()
}

impl fmt::Display for PinHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sha256:{}:{}",
            hex::encode(self.salt),
            hex::encode(self.digest)
        )
    }
}

impl fmt::Debug for PinHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinHash(..)")
    }
}

impl FromStr for PinHash {
    type Err = PinError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PinError::BadHash(s.to_owned());
        let mut parts = s.split(':');
        let (Some("sha256"), Some(salt), Some(digest), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let mut out = Self {
            salt: [0; 16],
            digest: [0; 32],
        };
        hex::decode_to_slice(salt, &mut out.salt).map_err(|_| bad())?;
        hex::decode_to_slice(digest, &mut out.digest).map_err(|_| bad())?;
        Ok(out)
    }
}

impl Serialize for PinHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PinHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_the_right_pin_only() {
        let hash = PinHash::new("1234", [7; 16]).unwrap();
        assert!(hash.verify(b"1234"));
        assert!(!hash.verify(b"1235"));
        assert!(!hash.verify(b"12345"));
        assert!(!hash.verify(b"12a4"));
        assert!(!hash.verify(b""));
    }

    #[test]
    fn text_form_round_trips_and_rejects_garbage() {
        let hash = PinHash::new("987654", [1; 16]).unwrap();
        let back: PinHash = hash.to_string().parse().unwrap();
        assert!(back.verify(b"987654"));
        assert!("md5:00:00".parse::<PinHash>().is_err());
        assert!("sha256:00:00".parse::<PinHash>().is_err());
        assert_eq!(PinHash::new("12", [0; 16]), Err(PinError::BadPin));
    }
}
