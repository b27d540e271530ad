//! Credential identity: what a reader reads off a card.
//!
//! A credential is identified by what the reader sends, never by an internal
//! id: a Wiegand-style card as (format, facility code, card number), or a raw
//! UID (the serial number of a smart card). The text form, used by the site
//! file, the CLI and DynamoDB keys, is `FORMAT:FACILITY:NUMBER` (for example
//! `h10301:12:34567`) or `uid:HEX` (for example `uid:04a1b2c3d4e5f6`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest raw UID accepted, in bytes (ISO 14443 UIDs are 4, 7 or 10).
pub const MAX_UID_LEN: usize = 16;

/// A card format, as a stable number (it travels on the wire as a `u16`).
///
/// The well-known formats have names; any other number is accepted as
/// `fmtN` so sites with proprietary formats can still be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CardFormat(pub u16);

impl CardFormat {
    /// HID H10301, 26-bit Wiegand: 8-bit facility, 16-bit number.
    pub const H10301: Self = Self(1);
    /// HID H10302, 37-bit without facility code.
    pub const H10302: Self = Self(2);
    /// HID H10304, 37-bit with a 16-bit facility code.
    pub const H10304: Self = Self(3);
    /// HID Corporate 1000, 35-bit.
    pub const CORP1000_35: Self = Self(4);
    /// HID Corporate 1000, 48-bit.
    pub const CORP1000_48: Self = Self(5);

    const NAMES: [(&'static str, CardFormat); 5] = [
        ("h10301", Self::H10301),
        ("h10302", Self::H10302),
        ("h10304", Self::H10304),
        ("corp1000_35", Self::CORP1000_35),
        ("corp1000_48", Self::CORP1000_48),
    ];

    /// The largest facility code and card number the format can encode,
    /// for the well-known formats (their bit layouts); `None` for any other
    /// format, whose numbers are taken as they come.
    pub fn limits(self) -> Option<(u32, u64)> {
        match self {
            // 26-bit: 8-bit facility, 16-bit number.
            Self::H10301 => Some((u8::MAX.into(), u16::MAX.into())),
            // 37-bit: 35-bit number, no facility.
            Self::H10302 => Some((0, (1 << 35) - 1)),
            // 37-bit: 16-bit facility, 19-bit number.
            Self::H10304 => Some((u16::MAX.into(), (1 << 19) - 1)),
            // 35-bit: 12-bit company id, 20-bit number.
            Self::CORP1000_35 => Some(((1 << 12) - 1, (1 << 20) - 1)),
            // 48-bit: 22-bit company id, 23-bit number.
            Self::CORP1000_48 => Some(((1 << 22) - 1, (1 << 23) - 1)),
            _ => None,
        }
    }

    /// The format's name, if it is a well-known one.
    pub fn name(self) -> Option<&'static str> {
        Self::NAMES
            .iter()
            .find(|(_, f)| *f == self)
            .map(|(name, _)| *name)
    }
}

impl fmt::Display for CardFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "fmt{}", self.0),
        }
    }
}

impl FromStr for CardFormat {
    type Err = CredentialParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        if let Some((_, format)) = Self::NAMES.iter().find(|(name, _)| *name == lower) {
            return Ok(*format);
        }
        lower
            .strip_prefix("fmt")
            .and_then(|n| n.parse::<u16>().ok())
            .map(CardFormat)
            .ok_or_else(|| CredentialParseError::UnknownFormat(s.to_owned()))
    }
}

/// A raw card UID of 1 to [`MAX_UID_LEN`] bytes, stored inline so that a
/// credential key is a small `Copy` value with no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid {
    len: u8,
    bytes: [u8; MAX_UID_LEN],
}

impl Uid {
    /// Makes a UID from its bytes; `None` when empty or longer than
    /// [`MAX_UID_LEN`].
    pub fn new(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() || bytes.len() > MAX_UID_LEN {
            return None;
        }
        let mut buf = [0u8; MAX_UID_LEN];
        buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Self {
            len: bytes.len() as u8,
            bytes: buf,
        })
    }

    /// The UID's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uid({})", hex::encode(self.as_bytes()))
    }
}

/// What identifies a credential: the data a reader reads off it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialKey {
    /// A Wiegand-style card.
    Card {
        /// The card format.
        format: CardFormat,
        /// The facility (site) code encoded on the card; 0 for formats that
        /// have none.
        facility: u32,
        /// The card number.
        number: u64,
    },
    /// A raw UID read from a smart card.
    Uid(Uid),
}

impl CredentialKey {
    /// A Wiegand-style card key.
    pub fn card(format: CardFormat, facility: u32, number: u64) -> Self {
        Self::Card {
            format,
            facility,
            number,
        }
    }
}

/// Bit 63 marks a packed key, so no packed key is 0 (an empty slot of the
/// credential table); bit 62 tells a card (0) from a UID (1).
const PACKED: u64 = 1 << 63;
const PACKED_UID: u64 = 1 << 62;
/// A card's facility code and number share the low 46 bits; its format
/// sits above them (bits 46..62).
const CARD_BITS: u32 = 46;
/// The longest UID that packs: 7 bytes (ISO 14443 single and double size
/// UIDs are 4 and 7) beside a 3-bit length.
const PACKED_UID_LEN: usize = 7;

impl CredentialKey {
    /// The key as one integer, for the credential table: a card whose
    /// facility code and number fit 46 bits together (every card of the
    /// well-known formats, and numbers below 2^32 with facility codes below
    /// 2^14 for any other), or a UID of up to 7 bytes. `None` for the rest,
    /// which are kept in a slower table. Never 0; different keys never
    /// pack to the same integer.
    #[inline]
    pub(crate) fn pack(&self) -> Option<u64> {
        match *self {
            Self::Card {
                format,
                facility,
                number,
            } => {
                let bits = format.number_bits();
                if number >> bits != 0 || u64::from(facility) >> (CARD_BITS - bits) != 0 {
                    return None;
                }
                let fields = u64::from(facility) << bits | number;
                Some(PACKED | u64::from(format.0) << CARD_BITS | fields)
            }
            Self::Uid(uid) => {
                let bytes = uid.as_bytes();
                if bytes.len() > PACKED_UID_LEN {
                    return None;
                }
                let mut word = [0u8; 8];
                word.get_mut(..bytes.len())?.copy_from_slice(bytes);
                let len = (bytes.len() as u64) << 56;
                Some(PACKED | PACKED_UID | len | u64::from_le_bytes(word))
            }
        }
    }

    /// The key that [`pack`](Self::pack) made `packed`; `None` for an
    /// integer it cannot have made.
    pub(crate) fn unpack(packed: u64) -> Option<Self> {
        if packed & PACKED == 0 {
            return None;
        }
        if packed & PACKED_UID == 0 {
            let format = CardFormat((packed >> CARD_BITS) as u16);
            let bits = format.number_bits();
            let fields = packed & ((1 << CARD_BITS) - 1);
            return Some(Self::card(
                format,
                (fields >> bits) as u32,
                fields & ((1 << bits) - 1),
            ));
        }
        let len = ((packed >> 56) & 0x3f) as usize;
        let word = (packed & ((1 << 56) - 1)).to_le_bytes();
        Uid::new(word.get(..len)?).map(Self::Uid)
    }
}

impl CardFormat {
    /// How many low bits of a packed card hold the number: the format's
    /// own width for the well-known formats (so every card of theirs
    /// packs), 32 for any other.
    #[inline]
    fn number_bits(self) -> u32 {
        match self {
            Self::H10301 => 16,
            Self::H10302 => 35,
            Self::H10304 => 19,
            Self::CORP1000_35 => 20,
            Self::CORP1000_48 => 23,
            _ => 32,
        }
    }
}

impl fmt::Display for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Card {
                format,
                facility,
                number,
            } => write!(f, "{format}:{facility}:{number}"),
            Self::Uid(uid) => write!(f, "uid:{}", hex::encode(uid.as_bytes())),
        }
    }
}

/// Why a credential's text form could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialParseError {
    /// The text is neither `FORMAT:FACILITY:NUMBER` nor `uid:HEX`.
    #[error("credential `{0}` is not `FORMAT:FACILITY:NUMBER` or `uid:HEX`")]
    Shape(String),
    /// The format is not a known name nor `fmtN`.
    #[error(
        "unknown card format `{0}`: use h10301, h10302, h10304, corp1000_35, corp1000_48 or fmtN"
    )]
    UnknownFormat(String),
    /// The facility code or card number is not a decimal number in range.
    #[error("`{0}` is not a valid facility code or card number")]
    Number(String),
    /// The UID is not 1 to 16 bytes of hex.
    #[error("uid `{0}` must be 1 to 16 bytes written as hex digits")]
    Uid(String),
    /// The facility code or card number does not fit the format's bits
    /// (an H10301 number above 65535, say): no card of that format can
    /// carry it, so it is a typo. Fix the number or the format.
    #[error("{format} {field} `{value}` is out of range: the format encodes 0 to {max}")]
    OutOfRange {
        /// The card format.
        format: CardFormat,
        /// `facility code` or `card number`.
        field: &'static str,
        /// The number given.
        value: u64,
        /// The largest the format encodes.
        max: u64,
    },
}

impl FromStr for CredentialKey {
    type Err = CredentialParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut parts = s.split(':');
        let (Some(first), Some(second)) = (parts.next(), parts.next()) else {
            return Err(CredentialParseError::Shape(s.to_owned()));
        };
        if first.eq_ignore_ascii_case("uid") {
            if parts.next().is_some() {
                return Err(CredentialParseError::Shape(s.to_owned()));
            }
            let bytes =
                hex::decode(second).map_err(|_| CredentialParseError::Uid(second.to_owned()))?;
            return Uid::new(&bytes)
                .map(CredentialKey::Uid)
                .ok_or_else(|| CredentialParseError::Uid(second.to_owned()));
        }
        let (Some(third), None) = (parts.next(), parts.next()) else {
            return Err(CredentialParseError::Shape(s.to_owned()));
        };
        let format: CardFormat = first.parse()?;
        let facility: u32 = second
            .parse()
            .map_err(|_| CredentialParseError::Number(second.to_owned()))?;
        let number: u64 = third
            .parse()
            .map_err(|_| CredentialParseError::Number(third.to_owned()))?;
        // Checked on the text form only (site files, DynamoDB items, the
        // CLI), where a number out of range is a typo. A reader may send
        // any number on the wire: no enrolled card matches it.
        if let Some((max_facility, max_number)) = format.limits() {
            let out = |field, value, max| CredentialParseError::OutOfRange {
                format,
                field,
                value,
                max,
            };
            if facility > max_facility {
                return Err(out("facility code", facility.into(), max_facility.into()));
            }
            if number > max_number {
                return Err(out("card number", number, max_number));
            }
        }
        Ok(Self::card(format, facility, number))
    }
}

impl Serialize for CredentialKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CredentialKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for text in [
            "h10301:12:34567",
            "h10304:65535:524287",
            "fmt900:0:1",
            "uid:04a1b2c3d4e5f6",
        ] {
            let key: CredentialKey = text.parse().unwrap();
            assert_eq!(key.to_string(), text);
        }
        assert_eq!(
            "H10301:1:2".parse::<CredentialKey>().unwrap(),
            CredentialKey::card(CardFormat::H10301, 1, 2)
        );
    }

    #[test]
    fn bad_text_forms_say_what_is_wrong() {
        use CredentialParseError as E;
        assert!(matches!(
            "h10301:12".parse::<CredentialKey>(),
            Err(E::Shape(_))
        ));
        assert!(matches!(
            "x:1:2".parse::<CredentialKey>(),
            Err(E::UnknownFormat(_))
        ));
        assert!(matches!(
            "h10301:-1:2".parse::<CredentialKey>(),
            Err(E::Number(_))
        ));
        assert!(matches!("uid:zz".parse::<CredentialKey>(), Err(E::Uid(_))));
        assert!(matches!("uid:".parse::<CredentialKey>(), Err(E::Uid(_))));
        let long = format!("uid:{}", "00".repeat(17));
        assert!(matches!(long.parse::<CredentialKey>(), Err(E::Uid(_))));
    }

    proptest::proptest! {
        /// Packing is exact: whatever packs unpacks to the same key, so two
        /// keys can never share a packed integer.
        #[test]
        fn packing_is_exact(format: u16, facility: u32, number: u64, uid: Vec<u8>, small: bool) {
            let (facility, number) = if small { (facility & 0xffff, number & 0xff_ffff) } else { (facility, number) };
            let card = CredentialKey::card(CardFormat(format % 8), facility, number);
            if let Some(packed) = card.pack() {
                proptest::prop_assert_eq!(CredentialKey::unpack(packed), Some(card));
            }
            if let Some(uid) = Uid::new(&uid) {
                let key = CredentialKey::Uid(uid);
                if let Some(packed) = key.pack() {
                    proptest::prop_assert_eq!(CredentialKey::unpack(packed), Some(key));
                }
            }
        }
    }

    #[test]
    fn packing_round_trips_and_never_collides() {
        let mut seen = std::collections::HashMap::new();
        let mut keys = vec![];
        for format in [1u16, 2, 3, 4, 5, 0, 6, 900, u16::MAX] {
            for facility in [
                0u32,
                1,
                255,
                4242,
                (1 << 11) - 1,
                1 << 11,
                (1 << 14) - 1,
                1 << 14,
                (1 << 22) - 1,
                u32::MAX,
            ] {
                for number in [
                    0u64,
                    1,
                    65535,
                    (1 << 19) - 1,
                    (1 << 23) - 1,
                    1 << 23,
                    (1 << 32) - 1,
                    1 << 32,
                    (1 << 35) - 1,
                    1 << 35,
                    u64::MAX,
                ] {
                    keys.push(CredentialKey::card(CardFormat(format), facility, number));
                }
            }
        }
        for len in 1..=MAX_UID_LEN {
            for fill in [0u8, 1, 0x80, 0xff] {
                keys.push(CredentialKey::Uid(Uid::new(&vec![fill; len]).unwrap()));
            }
        }
        let mut packed_count = 0;
        for key in keys {
            let Some(packed) = key.pack() else { continue };
            packed_count += 1;
            assert_ne!(packed, 0);
            assert_eq!(CredentialKey::unpack(packed), Some(key), "{key}");
            if let Some(other) = seen.insert(packed, key) {
                assert_eq!(other, key, "{key} and {other} both pack to {packed:x}");
            }
        }
        assert!(packed_count > 100);
        // Every card of a well-known format packs; so do short UIDs.
        for text in [
            "h10301:255:65535",
            "h10302:0:34359738367",
            "h10304:65535:524287",
            "corp1000_35:4095:1048575",
            "corp1000_48:4194303:8388607",
            "uid:04a1b2c3d4e5f6",
        ] {
            assert!(
                text.parse::<CredentialKey>().unwrap().pack().is_some(),
                "{text}"
            );
        }
        assert!(
            "uid:04a1b2c3d4e5f607"
                .parse::<CredentialKey>()
                .unwrap()
                .pack()
                .is_none()
        );
        assert_eq!(CredentialKey::unpack(0), None);
    }

    #[test]
    fn numbers_must_fit_their_format() {
        use CredentialParseError as E;
        for (ok, bad) in [
            ("h10301:255:65535", "h10301:256:1"),
            ("h10301:255:65535", "h10301:1:65536"),
            ("h10302:0:34359738367", "h10302:1:1"),
            ("h10302:0:34359738367", "h10302:0:34359738368"),
            ("h10304:65535:524287", "h10304:65536:1"),
            ("h10304:65535:524287", "h10304:1:524288"),
            ("corp1000_35:4095:1048575", "corp1000_35:4096:1"),
            ("corp1000_35:4095:1048575", "corp1000_35:1:1048576"),
            ("corp1000_48:4194303:8388607", "corp1000_48:4194304:1"),
            ("corp1000_48:4194303:8388607", "corp1000_48:1:8388608"),
        ] {
            assert!(ok.parse::<CredentialKey>().is_ok(), "{ok}");
            let err = bad.parse::<CredentialKey>().unwrap_err();
            assert!(matches!(err, E::OutOfRange { .. }), "{bad}: {err}");
        }
        // Other formats take any number.
        assert!(
            "fmt900:4294967295:18446744073709551615"
                .parse::<CredentialKey>()
                .is_ok()
        );
        assert_eq!(
            "h10301:1:70000"
                .parse::<CredentialKey>()
                .unwrap_err()
                .to_string(),
            "h10301 card number `70000` is out of range: the format encodes 0 to 65535"
        );
    }
}
