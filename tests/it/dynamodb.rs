//! DynamoDB source end to end (moto server on loopback): bootstrap, live
//! changes, revocation, restart, items written by another client, bad items.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use accessd_engine::{
    AccessLevelRecord, AssignmentRecord, CardholderRecord, CredentialKey, CredentialRecord,
    CredentialStatus, Day, DoorRecord, Interval, Presence, ReaderRecord, Reason, Record, RecordKey,
    Request, ScheduleRecord, SiteRecord, Verdict, decide,
};
use accessd_loader::item::{Attr, item_of};
use accessd_loader::{Admin, AwsBackend, AwsSettings, Loader, LoaderConfig, Source};
use aws_sdk_dynamodb::types::AttributeValue;
use jiff::Timestamp;
use jiff::civil::Time;

use crate::support::moto::moto;

fn settings() -> AwsSettings {
    AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto().endpoint.clone()),
        static_credentials: Some(("testing".into(), "testing".into())),
    }
}

fn config() -> LoaderConfig {
    LoaderConfig {
        scan_segments: 2,
        poll_interval: Duration::from_millis(50),
        rediscover_interval: Duration::from_secs(5),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(500),
        startup_attempts: 3,
        ..LoaderConfig::default()
    }
}

fn card(n: u64) -> CredentialKey {
    format!("h10301:1:{n}").parse().unwrap()
}

/// A site where `E1` with card 1 may pass reader `r1` at any time.
pub(crate) fn site() -> Vec<Record> {
    use Day::*;
    vec![
        Record::Site(SiteRecord {
            id: "hq".into(),
            time_zone: "Europe/Paris".into(),
            lockdown: false,
        }),
        Record::Door(DoorRecord {
            id: "d1".into(),
            site: "hq".into(),
            mode: Default::default(),
            unlock_ms: 4000,
            area: None,
        }),
        Record::Reader(ReaderRecord {
            id: "r1".into(),
            door: "d1".into(),
            direction: Default::default(),
        }),
        Record::Schedule(ScheduleRecord {
            id: "always".into(),
            intervals: vec![Interval {
                days: vec![Mon, Tue, Wed, Thu, Fri, Sat, Sun],
                start: Time::midnight(),
                end: Time::midnight(),
            }],
            holiday_sets: vec![],
            holiday_intervals: vec![],
        }),
        Record::AccessLevel(AccessLevelRecord {
            id: "staff".into(),
            doors: vec!["d1".into()],
            door_groups: vec![],
            schedule: "always".into(),
        }),
        Record::Cardholder(CardholderRecord {
            id: "E1".into(),
            status: Default::default(),
            valid_from: None,
            valid_until: None,
            lockdown_override: false,
        }),
        Record::Assignment(AssignmentRecord {
            holder: "E1".into(),
            level: "staff".into(),
            valid_from: None,
            valid_until: None,
        }),
        credential(1, CredentialStatus::Active),
    ]
}

pub(crate) fn credential(n: u64, status: CredentialStatus) -> Record {
    Record::Credential(CredentialRecord {
        card: card(n),
        holder: "E1".into(),
        status,
        valid_from: None,
        valid_until: None,
        pin: None,
    })
}

/// A fresh table (streams on) holding `records`, and its admin.
async fn table(name: &str, records: &[Record]) -> (Admin, Arc<AwsBackend>) {
    let backend = AwsBackend::connect(&settings(), name).await;
    let admin = Admin::new(backend.clone());
    admin.create_tables(None).await.unwrap();
    admin.put_all(records, |_| {}).await.unwrap();
    (admin, Arc::new(backend))
}

async fn start(backend: &Arc<AwsBackend>) -> Source {
    Source::start(Loader::new(Arc::clone(backend), config()), None)
        .await
        .unwrap()
}

fn decision(source: &Source, n: u64) -> (Verdict, Reason) {
    let request = Request {
        reader: "r1",
        credential: card(n),
        pin: None,
    };
    let d = decide(
        &source.snapshot().load(),
        &Presence::new(),
        &request,
        Timestamp::now(),
    );
    (d.verdict, d.reason)
}

fn verdict(source: &Source, n: u64) -> Verdict {
    decision(source, n).0
}

/// Waits (polling, 10 s at most) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_serves_what_the_table_holds() {
    let mut records = site();
    records.extend((2..40).map(|n| credential(n, CredentialStatus::Active)));
    records.push(credential(40, CredentialStatus::Lost));
    let (_admin, backend) = table("it-bootstrap", &records).await;
    let source = start(&backend).await;
    let snapshot = source.snapshot().load_full();
    assert_eq!(snapshot.stats().credentials, 40);
    assert_eq!(snapshot.stats().readers, 1);
    assert!(snapshot.problems().is_empty(), "{:?}", snapshot.problems());
    assert_eq!(source.stats().scanned(), records.len() as u64);
    assert_eq!(verdict(&source, 1), Verdict::Grant);
    assert_eq!(verdict(&source, 39), Verdict::Grant);
    assert_eq!(verdict(&source, 40), Verdict::Deny);
    assert_eq!(verdict(&source, 41), Verdict::Deny);
    source.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_insert_modify_remove_change_answers() {
    let (admin, backend) = table("it-live", &site()).await;
    let source = start(&backend).await;
    let first = source.snapshot().load().version();
    assert_eq!(verdict(&source, 2), Verdict::Deny);

    admin
        .put(&credential(2, CredentialStatus::Active))
        .await
        .unwrap();
    eventually("insert", || verdict(&source, 2) == Verdict::Grant).await;
    admin
        .put(&credential(2, CredentialStatus::Suspended))
        .await
        .unwrap();
    eventually("modify", || verdict(&source, 2) == Verdict::Deny).await;
    admin.delete(&RecordKey::Credential(card(2))).await.unwrap();
    eventually("remove", || {
        !source.snapshot().load().has_credential(&card(2))
    })
    .await;
    // A change to the topology: the door locked.
    let mut locked = site().remove(1);
    if let Record::Door(d) = &mut locked {
        d.mode = accessd_engine::DoorMode::Locked;
    }
    admin.put(&locked).await.unwrap();
    eventually("door locked", || verdict(&source, 1) == Verdict::Deny).await;
    assert!(source.snapshot().load().version() >= first + 4);
    source.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_honoured() {
    let (admin, backend) = table("it-revoke", &site()).await;
    let source = start(&backend).await;
    assert_eq!(verdict(&source, 1), Verdict::Grant);
    admin
        .set_credential_status(card(1), CredentialStatus::Revoked)
        .await
        .unwrap();
    eventually("revocation", || verdict(&source, 1) == Verdict::Deny).await;
    assert_eq!(decision(&source, 1).1, Reason::CredentialRevoked);
    admin
        .set_credential_status(card(1), CredentialStatus::Active)
        .await
        .unwrap();
    eventually("reinstatement", || verdict(&source, 1) == Verdict::Grant).await;
    // A status alone is not a credential.
    let err = admin
        .set_credential_status(card(99), CredentialStatus::Revoked)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    source.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_restart_resumes_without_loss() {
    let (admin, backend) = table("it-restart", &site()).await;
    let source = start(&backend).await;
    admin
        .put(&credential(2, CredentialStatus::Active))
        .await
        .unwrap();
    eventually("first write", || verdict(&source, 2) == Verdict::Grant).await;
    let resume = source.shutdown().await.unwrap();

    // Written while no follower runs.
    admin
        .set_credential_status(card(2), CredentialStatus::Revoked)
        .await
        .unwrap();
    admin
        .put(&credential(3, CredentialStatus::Active))
        .await
        .unwrap();

    // Resumed from the stream position: no scan, nothing lost.
    let resumed = Source::start(Loader::new(Arc::clone(&backend), config()), Some(resume))
        .await
        .unwrap();
    eventually("writes made while stopped", || {
        verdict(&resumed, 2) == Verdict::Deny && verdict(&resumed, 3) == Verdict::Grant
    })
    .await;
    assert_eq!(resumed.stats().bootstraps(), 0);
    resumed.shutdown().await.unwrap();

    // A cold restart (fresh bootstrap) agrees.
    admin
        .put(&credential(4, CredentialStatus::Active))
        .await
        .unwrap();
    let cold = start(&backend).await;
    assert_eq!(verdict(&cold, 2), Verdict::Deny);
    assert_eq!(verdict(&cold, 3), Verdict::Grant);
    assert_eq!(verdict(&cold, 4), Verdict::Grant);
    cold.shutdown().await.unwrap();
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn l(v: &[&str]) -> AttributeValue {
    AttributeValue::L(v.iter().map(|x| s(x)).collect())
}

fn item(pairs: Vec<(&str, AttributeValue)>) -> HashMap<String, AttributeValue> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The example items of docs/dynamodb-schema.md, written with the AWS SDK
/// directly, as another team's tool would.
fn documented_items() -> Vec<HashMap<String, AttributeValue>> {
    vec![
        item(vec![
            ("pk", s("site#hq")),
            ("sk", s("site")),
            ("type", s("site")),
            ("id", s("hq")),
            ("time_zone", s("Europe/Paris")),
            ("lockdown", AttributeValue::Bool(false)),
        ]),
        item(vec![
            ("pk", s("area#lab")),
            ("sk", s("area")),
            ("type", s("area")),
            ("id", s("lab")),
            ("passback", s("soft")),
            ("reset_after_s", AttributeValue::N("28800".into())),
        ]),
        item(vec![
            ("pk", s("door#lobby")),
            ("sk", s("door")),
            ("type", s("door")),
            ("id", s("lobby")),
            ("site", s("hq")),
            ("mode", s("card_only")),
            ("unlock_ms", AttributeValue::N("5000".into())),
            ("area", s("lab")),
        ]),
        item(vec![
            ("pk", s("reader#lobby-in")),
            ("sk", s("reader")),
            ("type", s("reader")),
            ("id", s("lobby-in")),
            ("door", s("lobby")),
            ("direction", s("in")),
        ]),
        item(vec![
            ("pk", s("door_group#ground-floor")),
            ("sk", s("door_group")),
            ("type", s("door_group")),
            ("id", s("ground-floor")),
            ("doors", l(&["lobby"])),
        ]),
        item(vec![
            ("pk", s("holiday_set#fr")),
            ("sk", s("holiday_set")),
            ("type", s("holiday_set")),
            ("id", s("fr")),
            ("dates", l(&["2026-12-25", "2027-01-01"])),
        ]),
        item(vec![
            ("pk", s("schedule#always")),
            ("sk", s("schedule")),
            ("type", s("schedule")),
            ("id", s("always")),
            (
                "intervals",
                AttributeValue::L(vec![AttributeValue::M(item(vec![
                    (
                        "days",
                        l(&["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
                    ),
                    ("start", s("00:00")),
                    ("end", s("00:00")),
                ]))]),
            ),
        ]),
        item(vec![
            ("pk", s("access_level#staff")),
            ("sk", s("access_level")),
            ("type", s("access_level")),
            ("id", s("staff")),
            ("door_groups", l(&["ground-floor"])),
            ("schedule", s("always")),
        ]),
        item(vec![
            ("pk", s("holder#E100")),
            ("sk", s("holder")),
            ("type", s("cardholder")),
            ("id", s("E100")),
            ("status", s("active")),
            ("valid_from", s("2020-01-01T00:00:00Z")),
        ]),
        item(vec![
            ("pk", s("holder#E100")),
            ("sk", s("level#staff")),
            ("type", s("assignment")),
            ("holder", s("E100")),
            ("level", s("staff")),
        ]),
        item(vec![
            ("pk", s("card#h10301:12:34567")),
            ("sk", s("card")),
            ("type", s("credential")),
            ("card", s("h10301:12:34567")),
            ("holder", s("E100")),
            ("status", s("active")),
        ]),
    ]
}

async fn sdk_client() -> aws_sdk_dynamodb::Client {
    let config = accessd_loader::sdk_config(&settings()).await;
    aws_sdk_dynamodb::Client::new(&config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_written_by_the_sdk_directly_are_served() {
    let name = "it-sdk";
    let (_admin, backend) = table(name, &[]).await;
    let client = sdk_client().await;
    let items = documented_items();
    // Half before the bootstrap (scan), half after (stream).
    let (before, after) = items.split_at(5);
    for it in before {
        client
            .put_item()
            .table_name(name)
            .set_item(Some(it.clone()))
            .send()
            .await
            .unwrap();
    }
    let source = start(&backend).await;
    for it in after {
        client
            .put_item()
            .table_name(name)
            .set_item(Some(it.clone()))
            .send()
            .await
            .unwrap();
    }
    let request = |s: &Source| {
        let request = Request {
            reader: "lobby-in",
            credential: "h10301:12:34567".parse().unwrap(),
            pin: None,
        };
        decide(
            &s.snapshot().load(),
            &Presence::new(),
            &request,
            Timestamp::now(),
        )
    };
    eventually("documented items", || {
        request(&source).verdict == Verdict::Grant
    })
    .await;
    assert_eq!(request(&source).unlock_ms, 5000);
    assert_eq!(source.stats().rejected(), 0);
    assert!(source.snapshot().load().problems().is_empty());
    // The SDK's REMOVE of the assignment takes the access away.
    client
        .delete_item()
        .table_name(name)
        .key("pk", s("holder#E100"))
        .key("sk", s("level#staff"))
        .send()
        .await
        .unwrap();
    eventually("assignment removed", || {
        request(&source).verdict == Verdict::Deny
    })
    .await;
    source.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_items_are_skipped_and_counted() {
    let (admin, backend) = table("it-bad", &site()).await;
    // In the scan: a typo'd attribute and a mistyped one.
    let mut typo = item_of(&credential(5, CredentialStatus::Active)).unwrap();
    typo.insert("hodler".into(), Attr::S("E1".into()));
    admin.put_item(typo).await.unwrap();
    let mut mistyped = item_of(&credential(6, CredentialStatus::Active)).unwrap();
    mistyped.insert("valid_until".into(), Attr::N("1700000000".into()));
    admin.put_item(mistyped).await.unwrap();
    let source = start(&backend).await;
    assert_eq!(source.stats().rejected(), 2);
    assert_eq!(verdict(&source, 5), Verdict::Deny);
    assert_eq!(verdict(&source, 6), Verdict::Deny);
    assert_eq!(verdict(&source, 1), Verdict::Grant);

    // On the stream: a revocation with a bad status word must not leave the
    // active version granting; an unknown entity type is skipped.
    let mut bad_revoke = item_of(&credential(1, CredentialStatus::Active)).unwrap();
    bad_revoke.insert("status".into(), Attr::S("Revoked!".into()));
    admin.put_item(bad_revoke).await.unwrap();
    eventually("bad revocation", || source.stats().rejected() == 3).await;
    assert_eq!(verdict(&source, 1), Verdict::Deny);
    let gate = [("pk", "gate#g1"), ("sk", "gate"), ("type", "gate")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Attr::S(v.to_owned())))
        .collect();
    admin.put_item(gate).await.unwrap();
    eventually("unknown entity", || source.stats().rejected() == 4).await;
    // The server kept serving throughout, and a fixed item is taken.
    admin
        .put(&credential(1, CredentialStatus::Active))
        .await
        .unwrap();
    eventually("fixed item", || verdict(&source, 1) == Verdict::Grant).await;
    source.shutdown().await.unwrap();
}

/// Asks over QUIC until the answer's verdict is `want` (10 s at most).
async fn over_quic_until(client: &accessd_protocol::Client, n: u64, want: Verdict, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let request = Request {
            reader: "r1",
            credential: card(n),
            pin: None,
        };
        let answer = client.decide(&request).await.unwrap();
        if answer.verdict == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_changes_reach_a_running_quic_server() {
    let (admin, backend) = table("it-quic", &site()).await;
    let source = start(&backend).await;
    let server = crate::support::quic::start_server(Arc::clone(source.snapshot())).await;
    let client = server.gateway().await;
    over_quic_until(&client, 1, Verdict::Grant, "bootstrapped grant").await;
    let first = client
        .decide(&Request {
            reader: "r1",
            credential: card(1),
            pin: None,
        })
        .await
        .unwrap();
    assert_eq!(first.unlock_ms, 4000);

    admin
        .put(&credential(2, CredentialStatus::Active))
        .await
        .unwrap();
    over_quic_until(&client, 2, Verdict::Grant, "insert").await;
    admin
        .put(&credential(2, CredentialStatus::Suspended))
        .await
        .unwrap();
    over_quic_until(&client, 2, Verdict::Deny, "modify").await;
    admin
        .set_credential_status(card(1), CredentialStatus::Revoked)
        .await
        .unwrap();
    over_quic_until(&client, 1, Verdict::Deny, "revocation").await;
    admin.delete(&RecordKey::Credential(card(2))).await.unwrap();
    eventually("remove", || {
        !source.snapshot().load().has_credential(&card(2))
    })
    .await;
    let last = client
        .decide(&Request {
            reader: "r1",
            credential: card(2),
            pin: None,
        })
        .await
        .unwrap();
    assert_eq!(last.reason(), Some(Reason::UnknownCredential));
    assert!(last.snapshot_version > first.snapshot_version);
    client.close().await;
    server.shutdown().await;
    source.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_site_survives_an_import_and_an_export() {
    // Site file → table (`accessd admin import`) → site file (`accessd
    // admin export`): the same records, so the same decisions.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/site.toml");
    let original =
        accessd_engine::SiteFile::parse(&std::fs::read_to_string(example).unwrap()).unwrap();
    let (_admin, _backend) = table("it-export", &[]).await;
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it-export.toml");
    let endpoint = moto().endpoint.clone();
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_accessd"))
            .args([
                "admin",
                "--table",
                "it-export",
                "--endpoint-url",
                &endpoint,
                "--region",
                "us-east-1",
            ])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    tokio::task::block_in_place(|| {
        run(&["import", "--site", example]);
        run(&["export", "--site", out.to_str().unwrap()]);
    });
    let exported = accessd_engine::SiteFile::parse(&std::fs::read_to_string(&out).unwrap())
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(&out).ok();
    let by_key = |records: &[Record]| {
        records
            .iter()
            .map(|r| (r.key(), r.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(exported.records.len(), original.records.len());
    assert!(
        by_key(&exported.records) == by_key(&original.records),
        "records differ"
    );
}

/// Runs `accessd admin --table TABLE ARGS` against moto; returns the exit
/// code and stderr.
fn admin_cli(table: &str, args: &[&str]) -> (Option<i32>, String) {
    let endpoint = moto().endpoint.clone();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_accessd"))
        .args([
            "admin",
            "--table",
            table,
            "--endpoint-url",
            &endpoint,
            "--region",
            "us-east-1",
        ])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Regression (issue 12): one bad item made `admin export` refuse the
/// whole table. Now every good record is exported, each item left out is
/// named on stderr with why, and only `--strict` turns that into a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_export_keeps_the_good_records_and_names_the_bad_items() {
    let (admin, _backend) = table("it-export-bad", &site()).await;
    let raw = |record: Record| item_of(&record).unwrap();
    // A card whose holder was deleted.
    let mut orphan = credential(7, CredentialStatus::Active);
    if let Record::Credential(c) = &mut orphan {
        c.holder = "deleted".into();
    }
    // A site with a bad time zone, and a door on it (left out with it).
    let mars = Record::Site(SiteRecord {
        id: "mars".into(),
        time_zone: "Mars/Olympus_Mons".into(),
        lockdown: false,
    });
    let airlock = Record::Door(DoorRecord {
        id: "airlock".into(),
        site: "mars".into(),
        mode: Default::default(),
        unlock_ms: 1000,
        area: None,
    });
    // A schedule whose intervals overlap.
    let overlapping = Record::Schedule(ScheduleRecord {
        id: "overlapping".into(),
        intervals: vec![
            Interval {
                days: vec![Day::Mon],
                start: Time::constant(8, 0, 0, 0),
                end: Time::constant(12, 0, 0, 0),
            },
            Interval {
                days: vec![Day::Mon],
                start: Time::constant(11, 0, 0, 0),
                end: Time::constant(13, 0, 0, 0),
            },
        ],
        holiday_sets: vec![],
        holiday_intervals: vec![],
    });
    // And an item that does not follow the schema at all.
    let mut typo = raw(credential(8, CredentialStatus::Active));
    typo.insert("hodler".into(), Attr::S("E1".into()));
    for item in [raw(orphan), raw(mars), raw(airlock), raw(overlapping), typo] {
        admin.put_item(item).await.unwrap();
    }
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it-export-bad.toml");
    let path = out.to_str().unwrap();
    let (code, stderr) =
        tokio::task::block_in_place(|| admin_cli("it-export-bad", &["export", "--site", path]));
    assert_eq!(code, Some(0), "{stderr}");
    let exported = accessd_engine::SiteFile::parse(&std::fs::read_to_string(&out).unwrap())
        .unwrap_or_else(|e| panic!("{e}"));
    let keys = |records: &[Record]| {
        records
            .iter()
            .map(Record::key)
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(keys(&exported.records), keys(&site()), "every good record");
    for (key, why) in [
        (
            "pk=`card#h10301:1:7` sk=`card`",
            "unknown cardholder `deleted`",
        ),
        ("pk=`site#mars` sk=`site`", "unknown time zone"),
        ("pk=`door#airlock` sk=`door`", "unknown site `mars`"),
        ("pk=`schedule#overlapping` sk=`schedule`", "overlaps"),
        (
            "pk=`card#h10301:1:8` sk=`card`",
            "unknown attribute `hodler`",
        ),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("left out: item ") && l.contains(key) && l.contains(why)),
            "no `{key}` … `{why}` in:\n{stderr}"
        );
    }
    assert!(stderr.contains("(5 item(s) left out)"), "{stderr}");
    // --strict: the same file, and a failure.
    std::fs::remove_file(&out).unwrap();
    let (code, stderr) = tokio::task::block_in_place(|| {
        admin_cli("it-export-bad", &["export", "--site", path, "--strict"])
    });
    assert_eq!(code, Some(1), "{stderr}");
    assert!(out.exists(), "--strict still writes what is good");
    std::fs::remove_file(&out).ok();
}
