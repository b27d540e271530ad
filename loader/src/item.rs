//! Items ↔ records: the table schema of `docs/dynamodb-schema.md` in code.
//!
//! One table holds every entity. Each item has a string partition key `pk`,
//! a string sort key `sk` and a string `type`; the other attributes are the
//! fields of the engine's record, with the same names:
//!
//! ```text
//!  type          pk                    sk
//!  site          site#ID               site
//!  area          area#ID               area
//!  door          door#ID               door
//!  reader        reader#ID             reader
//!  door_group    door_group#ID         door_group
//!  holiday_set   holiday_set#ID        holiday_set
//!  schedule      schedule#ID           schedule
//!  access_level  access_level#ID       access_level
//!  cardholder    holder#ID             holder
//!  credential    card#CARD             card
//!  assignment    holder#HOLDER         level#LEVEL
//! ```
//!
//! Reading is strict: a missing or mistyped attribute, an attribute the
//! schema does not have, an unknown entity type or a key that disagrees with
//! the attributes is an [`ItemError`] that names the item's key and the
//! attribute at fault. Reading and writing both go through the records' own
//! serde form (the one site files are read with) by `serde_dynamo`: the
//! attribute names, types, defaults and the refusal of unknown attributes
//! are the engine's by construction, defined once.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use accessd_engine::{
    AccessLevelRecord, AreaRecord, AssignmentRecord, CardholderRecord, Change, CredentialKey,
    CredentialRecord, DoorGroupRecord, DoorRecord, HolidaySetRecord, ReaderRecord, Record,
    RecordKey, ScheduleRecord, SiteRecord,
};
use serde::de::DeserializeOwned;
use serde_dynamo::AttributeValue;

/// The partition key attribute.
pub const PK: &str = "pk";
/// The sort key attribute.
pub const SK: &str = "sk";
/// The entity type attribute.
pub const TYPE: &str = "type";

/// A DynamoDB attribute value, independent of the SDK crate it came from
/// (DynamoDB and DynamoDB Streams have distinct Rust types for it).
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// `S`: a string.
    S(String),
    /// `N`: a number, in its decimal text form.
    N(String),
    /// `BOOL`.
    Bool(bool),
    /// `NULL`.
    Null,
    /// `L`: a list.
    L(Vec<Attr>),
    /// `M`: a map.
    M(Item),
    /// `SS`: a string set.
    Ss(Vec<String>),
    /// `NS`: a number set.
    Ns(Vec<String>),
    /// `B`: binary.
    B(Vec<u8>),
    /// `BS`: a binary set.
    Bs(Vec<Vec<u8>>),
}

impl Attr {
    /// The DynamoDB type descriptor (`S`, `N`, `BOOL`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::S(_) => "S",
            Self::N(_) => "N",
            Self::Bool(_) => "BOOL",
            Self::Null => "NULL",
            Self::L(_) => "L",
            Self::M(_) => "M",
            Self::Ss(_) => "SS",
            Self::Ns(_) => "NS",
            Self::B(_) => "B",
            Self::Bs(_) => "BS",
        }
    }
}

/// An item: attribute name → value.
pub type Item = BTreeMap<String, Attr>;

/// Why an item could not be read as a record. Every variant names the
/// item's key, so the operator can find and fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("item {key}: {problem}")]
pub struct ItemError {
    /// The item's key as `pk=… sk=…` (what is known of it).
    pub key: String,
    /// What is wrong.
    pub problem: ItemProblem,
}

/// What is wrong with an item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemProblem {
    /// `pk` or `sk` is missing or not a string: not an accessd item.
    #[error("key attribute `{0}` is missing or not of type S")]
    Key(&'static str),
    /// The key does not have the shape of any entity type.
    #[error("unknown entity type (key shapes are listed in docs/dynamodb-schema.md)")]
    UnknownEntity,
    /// The `type` attribute disagrees with the key.
    #[error("attribute `type` is `{found}` but the key is that of a `{expected}`")]
    TypeMismatch {
        /// The type the key says.
        expected: &'static str,
        /// The `type` attribute.
        found: String,
    },
    /// A required attribute is absent.
    #[error("required attribute `{0}` is missing")]
    Missing(String),
    /// An attribute has the wrong DynamoDB type.
    #[error("attribute `{attr}` must be of type {expected}, found {found}")]
    WrongType {
        /// The attribute (with its path inside lists and maps).
        attr: String,
        /// The type the schema wants.
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
    /// An attribute's value does not parse.
    #[error("attribute `{attr}`: {reason}")]
    BadValue {
        /// The attribute (with its path).
        attr: String,
        /// Why the value is refused.
        reason: String,
    },
    /// An attribute the schema does not have (a typo, most often).
    #[error("unknown attribute `{0}`")]
    Unknown(String),
    /// An insert or modify stream record without the new image: the
    /// stream's view type must be `NEW_AND_OLD_IMAGES` (or `NEW_IMAGE`).
    #[error("stream record has no NewImage (set the stream view type to NEW_AND_OLD_IMAGES)")]
    NoImage,
    /// An id attribute disagrees with the key.
    #[error("attribute `{attr}` is `{value}` but the key says `{key}`")]
    KeyMismatch {
        /// The attribute.
        attr: &'static str,
        /// Its value.
        value: String,
        /// What the key says.
        key: String,
    },
}

/// The entity type names, as written in the `type` attribute.
pub const ENTITY_TYPES: [&str; 11] = [
    "site",
    "area",
    "door",
    "reader",
    "door_group",
    "holiday_set",
    "schedule",
    "access_level",
    "cardholder",
    "credential",
    "assignment",
];

fn entity_name(key: &RecordKey) -> &'static str {
    match key {
        RecordKey::Site(_) => "site",
        RecordKey::Area(_) => "area",
        RecordKey::Door(_) => "door",
        RecordKey::Reader(_) => "reader",
        RecordKey::DoorGroup(_) => "door_group",
        RecordKey::HolidaySet(_) => "holiday_set",
        RecordKey::Schedule(_) => "schedule",
        RecordKey::AccessLevel(_) => "access_level",
        RecordKey::Cardholder(_) => "cardholder",
        RecordKey::Credential(_) => "credential",
        RecordKey::Assignment { .. } => "assignment",
    }
}

/// The `(pk, sk)` of a record key.
pub fn key_strings(key: &RecordKey) -> (String, String) {
    let simple = |prefix: &str, id: &str| (format!("{prefix}#{id}"), prefix.to_owned());
    match key {
        RecordKey::Site(id) => simple("site", id),
        RecordKey::Area(id) => simple("area", id),
        RecordKey::Door(id) => simple("door", id),
        RecordKey::Reader(id) => simple("reader", id),
        RecordKey::DoorGroup(id) => simple("door_group", id),
        RecordKey::HolidaySet(id) => simple("holiday_set", id),
        RecordKey::Schedule(id) => simple("schedule", id),
        RecordKey::AccessLevel(id) => simple("access_level", id),
        RecordKey::Cardholder(id) => simple("holder", id),
        RecordKey::Credential(card) => simple("card", &card.to_string()),
        RecordKey::Assignment { holder, level } => {
            (format!("holder#{holder}"), format!("level#{level}"))
        }
    }
}

/// The key attributes (`pk`, `sk`) of a record key, as an item.
pub fn key_item(key: &RecordKey) -> Item {
    let (pk, sk) = key_strings(key);
    Item::from([(PK.to_owned(), Attr::S(pk)), (SK.to_owned(), Attr::S(sk))])
}

fn describe_key(item: &Item) -> String {
    let part = |name: &str| match item.get(name) {
        Some(Attr::S(s)) => format!("`{}`", quote(s)),
        Some(other) => format!("<{}>", other.type_name()),
        None => "<missing>".to_owned(),
    };
    format!("pk={} sk={}", part(PK), part(SK))
}

/// Reads the record key from an item's `pk` and `sk` (all a stream `REMOVE`
/// record carries).
pub fn key_of(item: &Item) -> Result<RecordKey, ItemError> {
    let err = |problem| ItemError {
        key: describe_key(item),
        problem,
    };
    let Some(Attr::S(pk)) = item.get(PK) else {
        return Err(err(ItemProblem::Key(PK)));
    };
    let Some(Attr::S(sk)) = item.get(SK) else {
        return Err(err(ItemProblem::Key(SK)));
    };
    parse_key(pk, sk).map_err(err)
}

fn parse_key(pk: &str, sk: &str) -> Result<RecordKey, ItemProblem> {
    let id = |prefix: &str| -> Result<String, ItemProblem> {
        match pk.strip_prefix(prefix).and_then(|r| r.strip_prefix('#')) {
            Some(id) if !id.is_empty() => Ok(id.to_owned()),
            _ => Err(ItemProblem::UnknownEntity),
        }
    };
    Ok(match sk {
        "site" => RecordKey::Site(id("site")?),
        "area" => RecordKey::Area(id("area")?),
        "door" => RecordKey::Door(id("door")?),
        "reader" => RecordKey::Reader(id("reader")?),
        "door_group" => RecordKey::DoorGroup(id("door_group")?),
        "holiday_set" => RecordKey::HolidaySet(id("holiday_set")?),
        "schedule" => RecordKey::Schedule(id("schedule")?),
        "access_level" => RecordKey::AccessLevel(id("access_level")?),
        "holder" => RecordKey::Cardholder(id("holder")?),
        "card" => {
            let text = id("card")?;
            let card: CredentialKey = text.parse().map_err(|e| ItemProblem::BadValue {
                attr: PK.to_owned(),
                reason: quoting(e, &text),
            })?;
            // Two spellings of one card would be two items for one record:
            // a delete of one would silently remove the other's record.
            if card.to_string() != text {
                return Err(ItemProblem::BadValue {
                    attr: PK.to_owned(),
                    reason: format!(
                        "card `{}` must be written in canonical form `{card}`",
                        quote(&text)
                    ),
                });
            }
            RecordKey::Credential(card)
        }
        _ => match sk.strip_prefix("level#") {
            Some(level) if !level.is_empty() => RecordKey::Assignment {
                holder: id("holder")?,
                level: level.to_owned(),
            },
            _ => return Err(ItemProblem::UnknownEntity),
        },
    })
}

type Problem<T> = Result<T, ItemProblem>;

/// The most characters of an item's value a problem quotes. Problems are
/// logged, and DynamoDB allows values of 400 KB: a log line must not be.
const QUOTE_MAX_CHARS: usize = 200;

/// The most characters of a problem's reason, which may quote values and
/// then explain (a list of accepted words, say).
const REASON_MAX_CHARS: usize = 4 * QUOTE_MAX_CHARS;

/// `text` as a problem quotes it: whole when short, else its first
/// [`QUOTE_MAX_CHARS`] characters and its full length.
fn quote(text: &str) -> Cow<'_, str> {
    cut(text, QUOTE_MAX_CHARS)
}

/// `text` whole if it has at most `max` characters, else its first `max`
/// and its full length.
fn cut(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!(
            "{}… ({} bytes in all)",
            text.get(..cut).unwrap_or_default(),
            text.len()
        )),
    }
}

/// An error message about `text` with every quotation of `text` in it cut
/// down (parsers quote what they refuse, whole).
fn quoting(message: impl fmt::Display, text: &str) -> String {
    let message = message.to_string();
    match quote(text) {
        Cow::Borrowed(_) => message,
        Cow::Owned(short) => message.replace(text, &short),
    }
}

fn bad(attr: &str, reason: impl fmt::Display) -> ItemProblem {
    // A last guard: whatever a reason quotes, its log line stays short.
    let reason = reason.to_string();
    ItemProblem::BadValue {
        attr: quote(attr).into_owned(),
        reason: cut(&reason, REASON_MAX_CHARS).into_owned(),
    }
}

fn same(attr: &'static str, value: &str, key: &str) -> Problem<()> {
    if value == key {
        Ok(())
    } else {
        Err(ItemProblem::KeyMismatch {
            attr,
            value: quote(value).into_owned(),
            key: key.to_owned(),
        })
    }
}

/// Reads a whole item as a record.
pub fn record_of(item: &Item) -> Result<Record, ItemError> {
    let key = key_of(item)?;
    read_record(item, &key).map_err(|problem| ItemError {
        key: describe_key(item),
        problem,
    })
}

fn read_record(item: &Item, key: &RecordKey) -> Problem<Record> {
    let expected = entity_name(key);
    match item.get(TYPE) {
        Some(Attr::S(t)) if t == expected => {}
        Some(Attr::S(t)) => {
            return Err(ItemProblem::TypeMismatch {
                expected,
                found: quote(t).into_owned(),
            });
        }
        Some(other) => return Err(wrong(TYPE, "S", other.type_name())),
        None => return Err(ItemProblem::Missing(TYPE.to_owned())),
    }
    // The key decides the record type; the record's own serde form (the one
    // that writes items and reads site files) reads the other attributes.
    Ok(match key {
        RecordKey::Site(k) => with_id(item, k, |r: &SiteRecord| &r.id, Record::Site)?,
        RecordKey::Area(k) => with_id(item, k, |r: &AreaRecord| &r.id, Record::Area)?,
        RecordKey::Door(k) => with_id(item, k, |r: &DoorRecord| &r.id, Record::Door)?,
        RecordKey::Reader(k) => with_id(item, k, |r: &ReaderRecord| &r.id, Record::Reader)?,
        RecordKey::DoorGroup(k) => {
            with_id(item, k, |r: &DoorGroupRecord| &r.id, Record::DoorGroup)?
        }
        RecordKey::HolidaySet(k) => {
            with_id(item, k, |r: &HolidaySetRecord| &r.id, Record::HolidaySet)?
        }
        RecordKey::Schedule(k) => with_id(item, k, |r: &ScheduleRecord| &r.id, Record::Schedule)?,
        RecordKey::AccessLevel(k) => {
            with_id(item, k, |r: &AccessLevelRecord| &r.id, Record::AccessLevel)?
        }
        RecordKey::Cardholder(k) => {
            with_id(item, k, |r: &CardholderRecord| &r.id, Record::Cardholder)?
        }
        RecordKey::Credential(k) => {
            let r: CredentialRecord = fields(item)?;
            if r.card != *k {
                return Err(ItemProblem::KeyMismatch {
                    attr: "card",
                    value: r.card.to_string(),
                    key: k.to_string(),
                });
            }
            Record::Credential(r)
        }
        RecordKey::Assignment { holder, level } => {
            let r: AssignmentRecord = fields(item)?;
            same("holder", &r.holder, holder)?;
            same("level", &r.level, level)?;
            Record::Assignment(r)
        }
    })
}

/// Reads a record whose `id` attribute must equal the key's id.
fn with_id<T: DeserializeOwned>(
    item: &Item,
    key: &str,
    id: fn(&T) -> &str,
    record: fn(T) -> Record,
) -> Problem<Record> {
    let r: T = fields(item)?;
    same("id", id(&r), key)?;
    Ok(record(r))
}

fn wrong(attr: &str, expected: &'static str, found: &'static str) -> ItemProblem {
    ItemProblem::WrongType {
        attr: quote(attr).into_owned(),
        expected,
        found,
    }
}

/// Reads an item's attributes other than `pk`, `sk` and `type` as `T`
/// through `T`'s serde form (`serde_dynamo`), with the path of the attribute
/// at fault (`serde_path_to_error`) in every problem. The records refuse
/// unknown fields, so an attribute the schema does not have is an error.
fn fields<T: DeserializeOwned>(item: &Item) -> Problem<T> {
    let attrs = item
        .iter()
        .filter(|(name, _)| ![PK, SK, TYPE].contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name.clone(), to_dynamo(value)?)))
        .collect();
    let value = serde_dynamo::Deserializer::from_attribute_value(AttributeValue::M(attrs));
    serde_path_to_error::deserialize(value).map_err(|e| problem_of(item, &e))
}

/// One of our values as `serde_dynamo`'s. `NULL` in a map is dropped: an
/// optional attribute may be written as `{"NULL": true}`, and absent and
/// `NULL` mean the same (a required one is then reported missing).
fn to_dynamo(attr: &Attr) -> Option<AttributeValue> {
    Some(match attr {
        Attr::S(s) => AttributeValue::S(s.clone()),
        Attr::N(n) => AttributeValue::N(n.clone()),
        Attr::Bool(b) => AttributeValue::Bool(*b),
        Attr::Null => return None,
        Attr::L(l) => AttributeValue::L(
            l.iter()
                // In a list, NULL is kept: a list of strings with a NULL in
                // it is refused as the wrong type, not shortened.
                .map(|v| to_dynamo(v).unwrap_or(AttributeValue::Null(true)))
                .collect(),
        ),
        Attr::M(m) => AttributeValue::M(
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), to_dynamo(v)?)))
                .collect(),
        ),
        // No attribute of the schema is a set or binary, and serde_dynamo
        // would read a set as a list: the schema doc refuses sets (they
        // cannot be empty and lose order). An empty binary is refused by
        // every type the records have; the problem reports the real type.
        Attr::Ss(_) | Attr::Ns(_) | Attr::B(_) | Attr::Bs(_) => AttributeValue::B(Vec::new()),
    })
}

/// `serde_dynamo`'s value as ours.
fn from_dynamo(value: AttributeValue) -> Attr {
    match value {
        AttributeValue::S(s) => Attr::S(s),
        AttributeValue::N(n) => Attr::N(n),
        AttributeValue::Bool(b) => Attr::Bool(b),
        AttributeValue::Null(_) => Attr::Null,
        AttributeValue::L(l) => Attr::L(l.into_iter().map(from_dynamo).collect()),
        AttributeValue::M(m) => Attr::M(m.into_iter().map(|(k, v)| (k, from_dynamo(v))).collect()),
        AttributeValue::Ss(s) => Attr::Ss(s),
        AttributeValue::Ns(n) => Attr::Ns(n),
        AttributeValue::B(b) => Attr::B(b),
        AttributeValue::Bs(b) => Attr::Bs(b),
    }
}

/// The value at `path` inside `item`, if there is one.
fn value_at<'a>(item: &'a Item, path: &serde_path_to_error::Path) -> Option<&'a Attr> {
    use serde_path_to_error::Segment;
    let mut segments = path.iter();
    let mut here = match segments.next()? {
        Segment::Map { key } => item.get(key)?,
        _ => return None,
    };
    for segment in segments {
        here = match (segment, here) {
            (Segment::Map { key }, Attr::M(map)) => map.get(key)?,
            (Segment::Seq { index }, Attr::L(list)) => list.get(*index)?,
            _ => return None,
        };
    }
    Some(here)
}

/// The first name quoted in backticks in a serde message (`missing field
/// `x``, `unknown field `x`, expected ...`).
fn quoted_name(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once('`')?;
    Some(rest.split_once('`')?.0)
}

/// A path and a name inside it, as the problems write attributes.
fn join(path: &serde_path_to_error::Path, name: &str) -> String {
    if path.iter().next().is_none() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// A deserialization error as the problem it is, naming the attribute.
fn problem_of(item: &Item, e: &serde_path_to_error::Error<serde_dynamo::Error>) -> ItemProblem {
    let path = e.path();
    let message = e.inner().to_string();
    let found = || value_at(item, path).map_or("NULL", Attr::type_name);
    // serde_dynamo's type errors: what the schema wanted, by the DynamoDB
    // type that carries it (enums and the text forms are strings).
    let expected = match message.as_str() {
        "Expected string" | "Expected enum" | "Expected char" => Some("S"),
        "Expected num" => Some("N"),
        "Expected bool" => Some("BOOL"),
        "Expected seq" => Some("L"),
        "Expected map" => Some("M"),
        _ => None,
    };
    if let Some(expected) = expected {
        return wrong(&path.to_string(), expected, found());
    }
    if message.starts_with("missing field `")
        && let Some(name) = quoted_name(&message)
    {
        return ItemProblem::Missing(join(path, name));
    }
    if message.starts_with("unknown field `")
        && let Some(name) = quoted_name(&message)
    {
        let attr = if path.to_string().ends_with(name) {
            path.to_string()
        } else {
            join(path, name)
        };
        return ItemProblem::Unknown(quote(&attr).into_owned());
    }
    match value_at(item, path) {
        Some(Attr::S(text)) => bad(
            &path.to_string(),
            format_args!("`{}`: {}", quote(text), quoting(&message, text)),
        ),
        _ => bad(&path.to_string(), message),
    }
}

/// Why a record could not be written as an item. Only a record whose serde
/// form is not a map can cause it, which the engine's records never
/// are; it exists so a future record type fails loudly instead of writing
/// a wrong item.
#[derive(Debug, thiserror::Error)]
#[error("record {key:?} cannot be written as an item: {reason}")]
pub struct ToItemError {
    /// The record's key.
    pub key: RecordKey,
    /// Why.
    pub reason: String,
}

/// Writes a record as an item of the documented schema.
pub fn item_of(record: &Record) -> Result<Item, ToItemError> {
    let key = record.key();
    let fail = |reason: String| ToItemError {
        key: key.clone(),
        reason,
    };
    let value = match record {
        Record::Site(r) => serde_dynamo::to_attribute_value(r),
        Record::Area(r) => serde_dynamo::to_attribute_value(r),
        Record::Door(r) => serde_dynamo::to_attribute_value(r),
        Record::Reader(r) => serde_dynamo::to_attribute_value(r),
        Record::DoorGroup(r) => serde_dynamo::to_attribute_value(r),
        Record::HolidaySet(r) => serde_dynamo::to_attribute_value(r),
        Record::Schedule(r) => serde_dynamo::to_attribute_value(r),
        Record::AccessLevel(r) => serde_dynamo::to_attribute_value(r),
        Record::Cardholder(r) => serde_dynamo::to_attribute_value(r),
        Record::Credential(r) => serde_dynamo::to_attribute_value(r),
        Record::Assignment(r) => serde_dynamo::to_attribute_value(r),
    }
    .map_err(|e| fail(e.to_string()))?;
    let AttributeValue::M(fields) = value else {
        return Err(fail("not a map".to_owned()));
    };
    let mut item = key_item(&key);
    item.insert(TYPE.to_owned(), Attr::S(entity_name(&key).to_owned()));
    for (name, value) in fields {
        // The records skip absent optional fields; a NULL would be one too.
        if !matches!(value, AttributeValue::Null(_)) {
            item.insert(name, from_dynamo(value));
        }
    }
    Ok(item)
}

/// What a stream record means for the snapshot.
#[derive(Debug)]
pub enum Decoded {
    /// Apply this change.
    Change(Change),
    /// The new image is bad. If its key could be read, the record must be
    /// removed (`remove` is `Some`): keeping the previous version of an item
    /// its owner has since changed could keep a revoked card granting.
    Rejected {
        /// The error, naming the key.
        error: ItemError,
        /// The key of the record to remove, if it could be read.
        remove: Option<RecordKey>,
    },
}

/// Decodes a stream record: its keys, whether it is a remove, and the new
/// image (inserts and modifies).
pub fn decode_stream(keys: &Item, remove: bool, new_image: Option<&Item>) -> Decoded {
    if !remove && new_image.is_none() {
        return Decoded::Rejected {
            error: ItemError {
                key: describe_key(keys),
                problem: ItemProblem::NoImage,
            },
            remove: key_of(keys).ok(),
        };
    }
    match new_image.filter(|_| !remove) {
        Some(image) => match record_of(image) {
            Ok(record) => Decoded::Change(Change::Upsert(record)),
            Err(error) => Decoded::Rejected {
                error,
                remove: key_of(keys).ok(),
            },
        },
        None => match key_of(keys) {
            Ok(key) => Decoded::Change(Change::Delete(key)),
            Err(error) => Decoded::Rejected {
                error,
                remove: None,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use accessd_engine::synth::{SynthParams, site};
    use accessd_engine::{CredentialStatus, DoorMode, SiteFile};

    use super::*;

    fn s(v: &str) -> Attr {
        Attr::S(v.to_owned())
    }

    fn item(pairs: &[(&str, Attr)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn every_synthetic_record_round_trips() {
        let records = site(&SynthParams {
            holders: 200,
            doors: 40,
            levels: 10,
            pin_every: 3,
            ..SynthParams::default()
        });
        let mut seen = std::collections::BTreeSet::new();
        for record in &records {
            let item = item_of(record).unwrap();
            assert_eq!(record_of(&item).unwrap(), *record, "{item:?}");
            assert_eq!(key_of(&item).unwrap(), record.key());
            seen.insert(entity_name(&record.key()));
        }
        assert_eq!(seen.len(), ENTITY_TYPES.len(), "{seen:?}");
    }

    #[test]
    fn defaults_match_the_site_file() {
        let file = SiteFile::parse(
            "[[sites]]\nid = \"hq\"\ntime_zone = \"UTC\"\n[[doors]]\nid = \"d1\"\nsite = \"hq\"\n",
        )
        .unwrap();
        let door = item(&[
            ("pk", s("door#d1")),
            ("sk", s("door")),
            ("type", s("door")),
            ("id", s("d1")),
            ("site", s("hq")),
        ]);
        let from_item = record_of(&door).unwrap();
        assert!(file.records.contains(&from_item), "{from_item:?}");
    }

    #[test]
    fn strictness_names_the_key_and_attribute() {
        let base = item(&[
            ("pk", s("door#d1")),
            ("sk", s("door")),
            ("type", s("door")),
            ("id", s("d1")),
            ("site", s("hq")),
        ]);
        let with = |k: &str, v: Attr| {
            let mut i = base.clone();
            i.insert(k.to_owned(), v);
            i
        };
        let err = record_of(&with("unlock_ms", s("5000"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "item pk=`door#d1` sk=`door`: attribute `unlock_ms` must be of type N, found S"
        );
        let err = record_of(&with("mode", s("open"))).unwrap_err();
        assert!(err.to_string().contains("attribute `mode`"), "{err}");
        let err = record_of(&with("moed", s("locked"))).unwrap_err();
        assert_eq!(err.problem, ItemProblem::Unknown("moed".into()));
        let err = record_of(&with("id", s("d2"))).unwrap_err();
        assert!(matches!(err.problem, ItemProblem::KeyMismatch { .. }));
        let err = record_of(&with("type", s("reader"))).unwrap_err();
        assert!(matches!(err.problem, ItemProblem::TypeMismatch { .. }));
        // Regression (issue 12): a huge value was quoted whole in the
        // warning; now its first 200 characters and its length.
        let huge = "x".repeat(300_000);
        for bad_item in [
            with("mode", s(&huge)),
            item(&[
                ("pk", s("holder#h1")),
                ("sk", s("holder")),
                ("type", s("cardholder")),
                ("id", s("h1")),
                ("valid_from", s(&huge)),
            ]),
            with("id", s(&huge)),
            with("type", s(&huge)),
            with(&huge, s("locked")),
            item(&[("pk", s(&format!("card#{huge}"))), ("sk", s("card"))]),
        ] {
            let text = record_of(&bad_item).unwrap_err().to_string();
            assert!(text.len() < 1000, "{} bytes: {}", text.len(), &text[..300]);
            assert!(text.contains(&"x".repeat(200)), "{text}");
            assert!(text.contains("bytes in all)"), "{text}");
        }
        let mut missing = base.clone();
        missing.remove("site");
        assert_eq!(
            record_of(&missing).unwrap_err().problem,
            ItemProblem::Missing("site".into())
        );
        let unknown = item(&[("pk", s("gate#g1")), ("sk", s("gate")), ("type", s("gate"))]);
        let err = record_of(&unknown).unwrap_err();
        assert_eq!(err.problem, ItemProblem::UnknownEntity);
        assert!(err.to_string().contains("gate#g1"), "{err}");
        assert_eq!(
            record_of(&with("mode", s("card_and_pin"))).unwrap(),
            Record::Door(DoorRecord {
                id: "d1".into(),
                site: "hq".into(),
                mode: DoorMode::CardAndPin,
                unlock_ms: 5000,
                area: None,
            })
        );
    }

    /// Every kind of problem, with the attribute's path, as the operator
    /// reads it in the rejection warning.
    #[test]
    fn each_problem_names_the_attribute_by_its_path() {
        let schedule = |intervals: Attr, extra: &[(&str, Attr)]| {
            let mut i = item(&[
                ("pk", s("schedule#s")),
                ("sk", s("schedule")),
                ("type", s("schedule")),
                ("id", s("s")),
                ("intervals", intervals),
            ]);
            i.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            i
        };
        let interval = |pairs: &[(&str, Attr)]| Attr::M(item(pairs));
        let days = || Attr::L(vec![s("mon")]);
        let problem = |i: &Item| record_of(i).unwrap_err().problem.to_string();
        assert_eq!(
            problem(&schedule(Attr::L(vec![s("07:00")]), &[])),
            "attribute `intervals[0]` must be of type M, found S"
        );
        assert_eq!(
            problem(&schedule(
                Attr::L(vec![interval(&[
                    ("days", days()),
                    ("start", Attr::N("700".into())),
                    ("end", s("19:00")),
                ])]),
                &[]
            )),
            "attribute `intervals[0].start` must be of type S, found N"
        );
        assert_eq!(
            problem(&schedule(
                Attr::L(vec![interval(&[("days", days()), ("start", s("07:00"))])]),
                &[]
            )),
            "required attribute `intervals[0].end` is missing"
        );
        assert_eq!(
            problem(&schedule(
                Attr::L(vec![interval(&[
                    ("days", days()),
                    ("start", s("07:00")),
                    ("end", s("19:00")),
                    ("ends", s("20:00")),
                ])]),
                &[]
            )),
            "unknown attribute `intervals[0].ends`"
        );
        assert_eq!(
            problem(&schedule(s("weekdays"), &[])),
            "attribute `intervals` must be of type L, found S"
        );
        assert_eq!(
            problem(&schedule(
                Attr::L(vec![]),
                &[("holiday_sets", Attr::L(vec![s("uk"), Attr::Null]))]
            )),
            "attribute `holiday_sets[1]` must be of type S, found NULL"
        );
        assert_eq!(
            problem(&schedule(
                Attr::L(vec![]),
                &[("holiday_sets", Attr::Ss(vec!["uk".into()]))]
            )),
            "attribute `holiday_sets` must be of type L, found SS"
        );
        let area = |extra: (&str, Attr)| {
            item(&[
                ("pk", s("area#a")),
                ("sk", s("area")),
                ("type", s("area")),
                ("id", s("a")),
                extra,
            ])
        };
        assert_eq!(
            problem(&area(("reset_after_s", Attr::N("1.5".into())))),
            "attribute `reset_after_s`: Failed to parse '1.5' as an integer: invalid digit found in string"
        );
        assert_eq!(
            problem(&area(("passback", Attr::Bool(true)))),
            "attribute `passback` must be of type S, found BOOL"
        );
        // NULL is an absent optional attribute, and a missing required one.
        assert!(record_of(&area(("reset_after_s", Attr::Null))).is_ok());
        let mut null_id = area(("passback", s("hard")));
        null_id.insert("id".into(), Attr::Null);
        assert_eq!(problem(&null_id), "required attribute `id` is missing");
        let site = item(&[
            ("pk", s("site#hq")),
            ("sk", s("site")),
            ("type", s("site")),
            ("id", s("hq")),
            ("time_zone", s("UTC")),
            ("lockdown", s("true")),
        ]);
        assert_eq!(
            problem(&site),
            "attribute `lockdown` must be of type BOOL, found S"
        );
    }

    #[test]
    fn nested_interval_problems_have_a_path() {
        let bad_day = item(&[
            ("pk", s("schedule#s")),
            ("sk", s("schedule")),
            ("type", s("schedule")),
            ("id", s("s")),
            (
                "intervals",
                Attr::L(vec![Attr::M(item(&[
                    ("days", Attr::L(vec![s("mon"), s("funday")])),
                    ("start", s("07:00")),
                    ("end", s("19:00")),
                ]))]),
            ),
        ]);
        let err = record_of(&bad_day).unwrap_err();
        assert!(err.to_string().contains("`intervals[0].days[1]`"), "{err}");
    }

    /// What `docs/dynamodb-schema.md` says of times, checked: instants with
    /// an offset are taken (and mean the same instant in UTC); wall times
    /// are `HH:MM` or `HH:MM:SS`, two-digit hours only. Seconds other than
    /// `:00` pass the item reader and are refused when the schedule is
    /// checked (minute precision).
    #[test]
    fn time_formats_are_what_the_schema_doc_says() {
        let schedule = |start: &str| {
            item(&[
                ("pk", s("schedule#s")),
                ("sk", s("schedule")),
                ("type", s("schedule")),
                ("id", s("s")),
                (
                    "intervals",
                    Attr::L(vec![Attr::M(item(&[
                        ("days", Attr::L(vec![s("mon")])),
                        ("start", s(start)),
                        ("end", s("19:00")),
                    ]))]),
                ),
            ])
        };
        for ok in ["09:00", "09:00:00"] {
            let record = record_of(&schedule(ok)).unwrap();
            assert!(record.validate().is_ok(), "{ok}");
        }
        let err = record_of(&schedule("9:00")).unwrap_err();
        assert!(err.to_string().contains("intervals[0].start"), "{err}");
        let seconds = record_of(&schedule("09:00:30")).unwrap();
        assert!(seconds.validate().is_err());

        let holder = |from: &str| {
            item(&[
                ("pk", s("holder#E1")),
                ("sk", s("holder")),
                ("type", s("cardholder")),
                ("id", s("E1")),
                ("valid_from", s(from)),
            ])
        };
        let utc = record_of(&holder("2026-11-30T08:00:00Z")).unwrap();
        let offset = record_of(&holder("2026-11-30T09:00:00+01:00")).unwrap();
        assert_eq!(utc, offset);
        assert!(record_of(&holder("2026-11-30 08:00")).is_err());
    }

    #[test]
    fn card_keys_must_be_canonical() {
        let i = item(&[
            ("pk", s("card#H10301:1:2")),
            ("sk", s("card")),
            ("type", s("credential")),
            ("card", s("h10301:1:2")),
            ("holder", s("E1")),
        ]);
        let err = record_of(&i).unwrap_err();
        assert!(err.to_string().contains("canonical"), "{err}");
    }

    #[test]
    fn card_numbers_out_of_range_for_their_format_are_refused() {
        let i = item(&[
            ("pk", s("card#h10301:1:70000")),
            ("sk", s("card")),
            ("type", s("credential")),
            ("card", s("h10301:1:70000")),
            ("holder", s("E1")),
        ]);
        let err = record_of(&i).unwrap_err().to_string();
        assert_eq!(
            err,
            "item pk=`card#h10301:1:70000` sk=`card`: attribute `pk`: \
             h10301 card number `70000` is out of range: the format encodes 0 to 65535"
        );
    }

    #[test]
    fn a_bad_new_image_removes_the_old_record() {
        let keys = item(&[("pk", s("card#h10301:1:2")), ("sk", s("card"))]);
        let mut image = keys.clone();
        image.insert("type".into(), s("credential"));
        image.insert("card".into(), s("h10301:1:2"));
        image.insert("holder".into(), s("E1"));
        image.insert("status".into(), s("REVOKED"));
        match decode_stream(&keys, false, Some(&image)) {
            Decoded::Rejected { remove, error } => {
                assert!(error.to_string().contains("`status`"), "{error}");
                assert_eq!(
                    remove,
                    Some(RecordKey::Credential("h10301:1:2".parse().unwrap()))
                );
            }
            other => panic!("{other:?}"),
        }
        image.insert("status".into(), s("revoked"));
        match decode_stream(&keys, false, Some(&image)) {
            Decoded::Change(Change::Upsert(Record::Credential(c))) => {
                assert_eq!(c.status, CredentialStatus::Revoked);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_stream(&keys, true, None),
            Decoded::Change(Change::Delete(RecordKey::Credential(_)))
        ));
        assert!(matches!(
            decode_stream(&keys, false, None),
            Decoded::Rejected {
                remove: Some(RecordKey::Credential(_)),
                ..
            }
        ));
    }
}
