//! Site files: every problem reported at once with its location, never a
//! panic; a written site file reads back to the same records.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use accessd_engine::{SiteFile, synth};

const EXAMPLE: &str = include_str!("../../docs/examples/site.toml");

#[test]
fn the_example_site_is_valid_and_round_trips() {
    let site = SiteFile::parse(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(site.counts().get("credentials"), Some(&12));
    let written = SiteFile::to_toml(&site.records).unwrap();
    let back = SiteFile::parse(&written).unwrap_or_else(|e| panic!("{e}\n{written}"));
    assert_eq!(back, site);
}

#[test]
fn a_synthetic_site_round_trips() {
    let records = synth::site(&synth::SynthParams {
        holders: 200,
        doors: 40,
        levels: 10,
        ..Default::default()
    });
    let written = SiteFile::to_toml(&records).unwrap();
    let back = SiteFile::parse(&written).unwrap_or_else(|e| panic!("{e}"));
    // The file groups records by section; compare them by key.
    let by_key = |records: &[accessd_engine::Record]| {
        records
            .iter()
            .map(|r| (r.key(), r.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(back.records.len(), records.len());
    assert!(
        by_key(&back.records) == by_key(&records),
        "records differ after a round trip"
    );
}

#[test]
fn reading_by_section_hands_over_what_parsing_holds() {
    let written = SiteFile::to_toml(&synth::site(&synth::SynthParams {
        holders: 300,
        doors: 20,
        levels: 5,
        ..Default::default()
    }))
    .unwrap();
    let parsed = SiteFile::parse(&written).unwrap_or_else(|e| panic!("{e}"));
    let read = SiteFile::read(&written).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.counts(), parsed.counts());
    assert_eq!(read.len(), parsed.records.len());
    assert!(!read.is_empty());
    let handed: Vec<_> = read.into_records().collect();
    assert!(handed == parsed.records, "same records in the same order");
    assert_eq!(
        SiteFile::read(BAD).err().map(|e| e.to_string()),
        SiteFile::parse(BAD).err().map(|e| e.to_string()),
        "same problems"
    );
    assert!(SiteFile::read(BAD).is_err());
}

/// The builder's reader applies the large sections as they come: a valid
/// file gives the builder that applying `parse`'s records gives, and a file
/// with any problem the very error `parse` gives.
#[test]
fn building_at_once_holds_what_parsing_holds_and_refuses_the_same() {
    use accessd_engine::{Change, Record, SnapshotBuilder};
    // Enough records to be read on several threads.
    let records = synth::site(&synth::SynthParams {
        holders: 3000,
        doors: 40,
        levels: 10,
        ..Default::default()
    });
    let text = SiteFile::to_toml(&records).unwrap();
    let (mut built, counts) = SiteFile::build(&text, 7).unwrap_or_else(|e| panic!("{e}"));
    let parsed = SiteFile::parse(&text).unwrap();
    assert_eq!(counts, parsed.counts());
    let mut applied = SnapshotBuilder::new();
    assert!(
        applied
            .apply_all(parsed.records.into_iter().map(Change::Upsert))
            .is_empty()
    );
    let sorted = |b: &SnapshotBuilder| {
        let mut all: Vec<String> = b.records().map(|r| format!("{r:?}")).collect();
        all.sort();
        all
    };
    assert!(sorted(&built) == sorted(&applied), "same records");
    assert_eq!(built.publish(jiff::Timestamp::UNIX_EPOCH).version(), 8);

    let first = |pick: fn(&Record) -> bool| records.iter().find(|r| pick(r)).unwrap().clone();
    let holder = first(|r| matches!(r, Record::Cardholder(_)));
    let credential = first(|r| matches!(r, Record::Credential(_)));
    let assignment = first(|r| matches!(r, Record::Assignment(_)));
    let Record::Assignment(a) = &assignment else {
        unreachable!()
    };
    let level = a.level.clone();
    let with = |extra: Record| {
        let mut all = records.clone();
        all.push(extra);
        all
    };
    let without = |gone: &Record| records.iter().filter(|r| *r != gone).cloned().collect();
    let mut inverted = holder.clone();
    if let Record::Cardholder(h) = &mut inverted {
        h.valid_from = Some(jiff::Timestamp::from_second(2_000_000_000).unwrap());
        h.valid_until = Some(jiff::Timestamp::UNIX_EPOCH);
    }
    let level_record = records
        .iter()
        .find(|r| matches!(r, Record::AccessLevel(l) if l.id == level))
        .unwrap()
        .clone();
    let cases: Vec<(&str, Vec<Record>)> = vec![
        ("a cardholder twice", with(holder.clone())),
        ("a credential twice", with(credential)),
        ("an assignment twice", with(assignment)),
        ("a cardholder left out", without(&holder)),
        ("an access level left out", without(&level_record)),
        (
            "an inverted validity",
            records
                .iter()
                .map(|r| {
                    if *r == holder {
                        inverted.clone()
                    } else {
                        r.clone()
                    }
                })
                .collect(),
        ),
    ];
    for (what, records) in cases {
        let text = SiteFile::to_toml(&records).unwrap();
        let parsed = SiteFile::parse(&text).err().map(|e| e.to_string());
        assert!(parsed.is_some(), "{what}: parse refuses it");
        let built = SiteFile::build(&text, 0).err().map(|e| e.to_string());
        assert_eq!(built, parsed, "{what}");
    }
}

const BAD: &str = r#"
[[sites]]
id = "hq"
time_zone = "Mars/Olympus_Mons"

[[sites]]
id = "hq"
time_zone = "UTC"

[[doors]]
id = "lobby"
site = "nowhere"
mode = "card_only"

[[doors]]
id = "side"
site = "hq"
mode = "sometimes"

[[readers]]
id = "r1"
door = "ghost-door"
colour = "blue"

[[readers]]
id = "r2"
door = "lobby"

[[schedules]]
id = "overlapping"
intervals = [
  { days = ["mon"], start = "08:00", end = "12:00" },
  { days = ["mon"], start = "11:00", end = "13:00" },
]

[[schedules]]
id = "empty"
intervals = [{ days = ["tue"], start = "09:00", end = "09:00" }]

[[access_levels]]
id = "staff"
doors = ["lobby", "nope"]
door_groups = ["no-group"]
schedule = "no-schedule"

[[cardholders]]
id = "alice"
valid_from = "2027-01-01T00:00:00Z"
valid_until = "2026-01-01T00:00:00Z"

[[credentials]]
card = "h10301:12:1"
holder = "bob"

[[credentials]]
card = "not-a-card"
holder = "alice"

[[assignments]]
holder = "alice"
level = "managers"

[unexpected]
x = 1
"#;

#[test]
fn every_problem_is_reported_at_once_with_its_location() {
    let err = SiteFile::parse(BAD).unwrap_err();
    let text = err.to_string();
    let expect = [
        ("line 2, sites[0] `hq`", "Mars/Olympus_Mons"),
        ("line 6, sites[1] `hq`", "duplicate id"),
        ("line 10, doors[0] `lobby`", "unknown site `nowhere`"),
        ("doors[1] `side`", "sometimes"),
        ("readers[0] `r1`", "colour"),
        ("line 29, schedules[0] `overlapping`", "overlaps"),
        ("schedules[1] `empty`", "empty"),
        ("access_levels[0] `staff`", "unknown door `nope`"),
        ("access_levels[0] `staff`", "unknown door group `no-group`"),
        ("access_levels[0] `staff`", "unknown schedule `no-schedule`"),
        ("cardholders[0] `alice`", "valid_until is before valid_from"),
        ("credentials[0] `h10301:12:1`", "unknown cardholder `bob`"),
        ("credentials[1] `not-a-card`", "not-a-card"),
        (
            "assignments[0] `alice / managers`",
            "unknown access level `managers`",
        ),
        ("`unexpected`", "unknown section"),
    ];
    for (location, message) in expect {
        assert!(
            err.problems
                .iter()
                .any(|p| p.location.contains(location) && p.message.contains(message)),
            "missing problem at `{location}` containing `{message}` in:\n{text}"
        );
    }
    assert!(err.problems.len() >= expect.len(), "{text}");
}

#[test]
fn syntax_errors_give_the_line() {
    let err = SiteFile::parse("[[sites]]\nid = \"hq\"\ntime_zone = \n").unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].location, "line 3");
}

#[test]
fn sections_must_be_arrays_of_tables() {
    let err = SiteFile::parse("sites = 3\n").unwrap_err();
    assert!(err.problems[0].message.contains("[[sites]]"), "{err}");
}

#[test]
fn garbage_never_panics() {
    for text in [
        "",
        "\u{0}\u{1}",
        "[[",
        "[[doors]]\nid = 5",
        "credentials = [{}]",
        "[[schedules]]\nid=\"s\"\nintervals=[{days=[\"mon\"],start=\"25:00\",end=\"01:00\"}]",
    ] {
        let _ = SiteFile::parse(text);
    }
    // An empty file is an empty (valid) site.
    assert_eq!(SiteFile::parse("").unwrap().records.len(), 0);
}

/// Regression (issue 12): an unknown section had no line and came first
/// whatever its place in the file; every problem now has the line the
/// TOML parser gives, in file order.
#[test]
fn issue_12_every_problem_has_its_line_in_file_order() {
    let text = r#"[[sites]]
id = "hq"
time_zone = "UTC"

[[doorz]]
id = "typo"

[[doors]]
id = "lobby"
site = "hq"
mode = "sometimes"

[[readers]]
id = "r1"
door = "ghost"

[zzz]
x = 1
"#;
    let err = SiteFile::parse(text).unwrap_err();
    let got: Vec<(usize, &str, &str)> = err
        .problems
        .iter()
        .map(|p| (p.line, p.location.as_str(), p.message.as_str()))
        .collect();
    let want = [
        (5, "line 5, `doorz`", "unknown section"),
        // The offending value's own line, not its record's.
        (
            11,
            "line 11, doors[0] `lobby`",
            "unknown variant `sometimes`",
        ),
        // A problem of the whole record: the record's first line.
        (13, "line 13, readers[0] `r1`", "unknown door `ghost`"),
        (17, "line 17, `zzz`", "unknown section"),
    ];
    assert_eq!(got.len(), want.len(), "{err}");
    for ((line, location, message), (wline, wlocation, wmessage)) in got.iter().zip(want) {
        assert_eq!((*line, *location), (wline, wlocation), "{err}");
        assert!(message.contains(wmessage), "{message} lacks {wmessage}");
    }
}

#[test]
fn inline_records_and_non_array_sections_have_their_line() {
    let text = "sites = [\n  { id = \"hq\", time_zone = \"UTC\" },\n  { id = \"hq\", time_zone = \"UTC\" },\n]\ndoors = 3\n";
    let err = SiteFile::parse(text).unwrap_err();
    let got: Vec<(usize, &str)> = err
        .problems
        .iter()
        .map(|p| (p.line, p.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (3, "duplicate id"),
            (5, "must be an array of tables (`[[doors]]`)")
        ],
        "{err}"
    );
}

/// What `accessd admin export` relies on (issue 12): one bad record never
/// blocks the rest; what refers to a left-out record goes too, so what is
/// kept is always a valid site file.
#[test]
fn keep_valid_leaves_out_bad_records_and_what_names_them() {
    use accessd_engine::{
        CredentialRecord, CredentialStatus, DoorRecord, Record, RecordKey, SiteRecord,
    };
    let good = SiteFile::parse(EXAMPLE).unwrap();
    let mut records = good.records.clone();
    records.push(Record::Site(SiteRecord {
        id: "mars".into(),
        time_zone: "Mars/Olympus_Mons".into(),
        lockdown: false,
    }));
    records.push(Record::Door(DoorRecord {
        id: "airlock".into(),
        site: "mars".into(),
        mode: Default::default(),
        unlock_ms: 1000,
        area: None,
    }));
    records.push(Record::Credential(CredentialRecord {
        card: "h10301:12:4242".parse().unwrap(),
        holder: "deleted-holder".into(),
        status: CredentialStatus::Active,
        valid_from: None,
        valid_until: None,
        pin: None,
    }));
    let (site, left_out) = SiteFile::keep_valid(records);
    assert_eq!(site, good, "everything good is kept");
    let mut left: Vec<(RecordKey, String)> = left_out
        .into_iter()
        .map(|(r, why)| (r.key(), why))
        .collect();
    left.sort();
    let want = [
        (RecordKey::Site("mars".into()), "unknown time zone"),
        (RecordKey::Door("airlock".into()), "unknown site `mars`"),
        (
            RecordKey::Credential("h10301:12:4242".parse().unwrap()),
            "unknown cardholder `deleted-holder`",
        ),
    ];
    let mut want_keys: Vec<RecordKey> = want.iter().map(|(k, _)| k.clone()).collect();
    want_keys.sort();
    assert_eq!(
        left.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        want_keys
    );
    for (key, message) in want {
        let (_, why) = left.iter().find(|(k, _)| *k == key).unwrap();
        assert!(why.contains(message), "{key:?}: {why}");
    }
}
