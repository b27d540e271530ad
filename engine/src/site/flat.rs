//! A fast reader for the plainest records of a site file: every line
//! `key = "string"`, `key = true|false` or `key = 123`. At a million
//! cardholders nearly every record is one of these (three lines each), and
//! the TOML parser spent about 5 µs on each building a spanned table.
//!
//! This reader only ever says yes to a record the TOML parser reads to the
//! same value: anything else (an escape, a comment, an array, a date, a
//! quoted or dotted key, a duplicate key, a value the record's type
//! refuses) makes it answer `None`, and the record goes to the TOML parser,
//! which also words every problem.

use serde::de::value::{
    BoolDeserializer, BorrowedStrDeserializer, I64Deserializer, MapDeserializer,
};
use serde::de::{DeserializeOwned, Deserializer, IntoDeserializer, Visitor};

/// Fields of one record, at most: more goes to the TOML parser.
const MAX_FIELDS: usize = 16;

/// Reads `body`, the lines of a record after its header, as a `T`, or
/// `None` if they are not all plain (see the module docs) or do not make
/// a `T`.
pub(super) fn read<T: DeserializeOwned>(body: &str) -> Option<T> {
    let mut fields: Vec<(&str, Plain<'_>)> = Vec::with_capacity(8);
    for line in body.split('\n') {
        let line = line.trim_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=')?;
        let key = key.trim_end_matches([' ', '\t']);
        let bare = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        if key.is_empty() || !key.bytes().all(bare) || fields.iter().any(|(k, _)| *k == key) {
            return None;
        }
        let value = plain(value.trim_start_matches([' ', '\t']))?;
        if fields.len() == MAX_FIELDS {
            return None;
        }
        fields.push((key, value));
    }
    // Deserialising the map also checks that every field was taken.
    T::deserialize(MapDeserializer::<_, Error>::new(fields.into_iter())).ok()
}

/// A value as TOML reads it, if it is plain: a basic string with no
/// escape and no control character, `true`, `false`, or a decimal integer
/// without sign, leading zero or underscore (besides `0` and negatives).
fn plain(value: &str) -> Option<Plain<'_>> {
    if let Some(rest) = value.strip_prefix('"') {
        let s = rest.strip_suffix('"')?;
        let allowed = |b: u8| b != b'"' && b != b'\\' && b != 0x7f && (b >= 0x20 || b == b'\t');
        return s.bytes().all(allowed).then_some(Plain::Str(s));
    }
    match value {
        "true" => return Some(Plain::Bool(true)),
        "false" => return Some(Plain::Bool(false)),
        _ => {}
    }
    let digits = value.strip_prefix('-').unwrap_or(value);
    let decimal = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !decimal {
        return None;
    }
    value.parse().ok().map(Plain::Int)
}

/// A plain value.
#[derive(Clone, Copy)]
enum Plain<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
}

type Error = serde::de::value::Error;

impl<'de> IntoDeserializer<'de, Error> for Plain<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> Deserializer<'de> for Plain<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Plain::Str(s) => BorrowedStrDeserializer::new(s).deserialize_any(visitor),
            Plain::Bool(b) => BoolDeserializer::new(b).deserialize_any(visitor),
            Plain::Int(i) => I64Deserializer::new(i).deserialize_any(visitor),
        }
    }

    /// A key that is present holds a value: TOML has no null.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    /// A unit variant by its name, as TOML writes one.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self {
            Plain::Str(s) => {
                BorrowedStrDeserializer::new(s).deserialize_enum(name, variants, visitor)
            }
            other => other.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::read;
    use crate::model::{CardholderRecord, CredentialRecord, DoorRecord};
    use serde::de::DeserializeOwned;

    /// What the TOML parser reads `body` to, as a record of one section.
    fn by_toml<T: DeserializeOwned>(body: &str) -> Option<T> {
        #[derive(serde::Deserialize)]
        struct One<T> {
            r: Vec<T>,
        }
        toml::from_str::<One<T>>(&format!("[[r]]\n{body}"))
            .ok()
            .and_then(|one| one.r.into_iter().next())
    }

    /// Every record this reader takes reads the same with the TOML parser;
    /// what it leaves is left for the parser, good or bad.
    #[test]
    fn what_it_reads_the_toml_parser_reads_the_same() {
        let taken = [
            "id = \"H1\"\nstatus = \"active\"\n",
            "  id\t=  \"H1\"  \nstatus = \"inactive\"\n\n",
            "id = \"H1 # not a comment\"\nstatus = \"active\"\nlockdown_override = true\n",
            "id = \"Ünïcode\"\nstatus = \"active\"\n",
        ];
        for body in taken {
            let fast: CardholderRecord = read(body).unwrap_or_else(|| panic!("{body:?}"));
            assert_eq!(Some(fast), by_toml(body), "{body:?}");
        }
        let left = [
            // Not plain: escapes, comments, dates, arrays, keys.
            "id = \"H\\u0031\"\nstatus = \"active\"\n",
            "id = \"H1\" # comment\nstatus = \"active\"\n",
            "id = 'H1'\nstatus = \"active\"\n",
            "id = \"H1\"\nstatus = \"active\"\nvalid_from = 2026-01-01T00:00:00Z\n",
            "\"id\" = \"H1\"\nstatus = \"active\"\n",
            "id.x = \"H1\"\nstatus = \"active\"\n",
            "id = \"H1\"\nid = \"H2\"\nstatus = \"active\"\n",
            "id = \"H1\"\r\nstatus = \"active\"\r\n",
            // Plain, but not a cardholder: the parser says why.
            "id = \"H1\"\nstatus = \"lost\"\n",
            "id = \"H1\"\nstatus = \"active\"\ncolour = \"red\"\n",
            "status = \"active\"\n",
            "id = 7\nstatus = \"active\"\n",
            "id = \"H1\"\nstatus = \"active\"\nlockdown_override = 1\n",
            "id = \"H1\nstatus = \"active\"\n",
            "",
        ];
        for body in left {
            assert!(read::<CardholderRecord>(body).is_none(), "{body:?}");
        }
        // Integers and options as TOML reads them.
        let door = "id = \"d1\"\nsite = \"hq\"\nunlock_ms = 3000\n";
        let fast: DoorRecord = read(door).unwrap();
        assert_eq!(Some(fast), by_toml(door));
        for bad in ["007", "+5", "1_000", "0x10", "99999999999999999999", "-"] {
            let door = format!("id = \"d1\"\nsite = \"hq\"\nunlock_ms = {bad}\n");
            assert!(read::<DoorRecord>(&door).is_none(), "{bad}");
        }
        let card = "card = \"h10301:12:1001\"\nholder = \"H1\"\nstatus = \"active\"\n";
        let fast: CredentialRecord = read(card).unwrap();
        assert_eq!(Some(fast), by_toml(card));
        let bad_card = "card = \"h10301:12\"\nholder = \"H1\"\nstatus = \"active\"\n";
        assert!(read::<CredentialRecord>(bad_card).is_none());
    }
}
