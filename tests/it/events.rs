//! The access-event trail end to end: `accessd serve --events-dir` as a
//! child process killed with SIGKILL under load (every answered decision
//! has exactly one event in the spool), shipping to the events table in
//! moto across an outage, and alarms onto an EventBridge bus in moto,
//! observed through an SQS queue the bus's rule targets.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use accessd_engine::{
    AccessEvent, CredentialKey, CredentialStatus, Reason, Record, Request, Verdict,
};
use accessd_loader::events::{Spool, SpoolConfig, SpoolReader};
use accessd_loader::{Admin, AwsBackend, sdk_config};
use accessd_protocol::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::durable::{Served, settings, temp_dir};
use crate::dynamodb::{credential, site};
use crate::support::moto::{free_port, moto, start_on};

const EXAMPLE_SITE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/site.toml");

/// Every event in the spool at `dir`, oldest first.
fn spooled(dir: &Path) -> Vec<AccessEvent> {
    let mut reader = SpoolReader::open_dir(dir);
    let mut all = Vec::new();
    loop {
        let batch = reader.read(10_000).unwrap();
        if batch.events.is_empty() {
            return all;
        }
        all.extend(batch.events);
    }
}

/// The spool's events once it holds at least `n`: a running server's
/// appends reach the segment files (what another process reads) within its
/// fsync interval.
async fn until_spooled(dir: &Path, n: usize, served: &Served) -> Vec<AccessEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = spooled(dir);
        if events.len() >= n {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} events in the spool's segments:\n{}",
            events.len(),
            served.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Events per tag (the reader time the test sent as a unique tag).
fn by_tag(events: &[AccessEvent]) -> HashMap<i64, usize> {
    let mut counts = HashMap::new();
    for e in events {
        if let Some(t) = e.reader_time {
            *counts.entry(t.as_millisecond()).or_default() += 1;
        }
    }
    counts
}

/// Sends tagged requests from `tasks` concurrent senders on one connection
/// until `stop`; returns the tags whose answers arrived.
async fn load(
    client: Arc<Client>,
    tasks: usize,
    stop: Arc<AtomicBool>,
    next: Arc<AtomicI64>,
) -> Vec<i64> {
    let answered = Arc::new(Mutex::new(Vec::new()));
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (client, stop, next, answered) =
            (client.clone(), stop.clone(), next.clone(), answered.clone());
        set.spawn(async move {
            // A grant at any hour (erin's security level runs on the
            // "always" schedule), a deny by the data (inactive holder), an
            // unknown card.
            let cards = ["h10301:12:1005", "h10301:12:1002", "h10301:12:4242"];
            let card: CredentialKey = cards[t % cards.len()].parse().unwrap();
            while !stop.load(Ordering::Acquire) {
                let tag = next.fetch_add(1, Ordering::Relaxed);
                let request = Request {
                    reader: "lobby-in",
                    credential: card,
                    pin: None,
                };
                // A killed server never answers: give up on it.
                match tokio::time::timeout(
                    Duration::from_secs(2),
                    client.decide_at(&request, Some(tag)),
                )
                .await
                {
                    Ok(Ok(_)) => answered.lock().unwrap().push(tag),
                    _ => return,
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    Arc::try_unwrap(answered).unwrap().into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_event_of_an_answered_decision() {
    let dir = temp_dir("events-kill9");
    let spool = dir.join("events");
    let spool_arg = spool.to_str().unwrap().to_owned();
    // The staging ring in a directory of the test's (tmpfs or not: a
    // process crash keeps a file's pages either way).
    let ring = dir.join("ring");
    let ring_arg = ring.to_str().unwrap().to_owned();
    // Flush and fsync once a minute: a crash of the process must depend
    // on neither. The events of the answered decisions are in the ring.
    let args = [
        "--site",
        EXAMPLE_SITE,
        "--events-dir",
        &spool_arg,
        "--events-ring-dir",
        &ring_arg,
        "--events-fsync-ms",
        "60000",
    ];
    let start = 1_000_000;
    let next = Arc::new(AtomicI64::new(start));

    let mut served = Served::start_with(&dir, &args);
    let client = Arc::new(served.client().await);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(load(client.clone(), 16, stop.clone(), next.clone()));
    // Kill it in the middle of the load, once plenty has been answered
    // (a tag is taken before its request is sent: 16 may be in flight).
    let deadline = Instant::now() + Duration::from_secs(60);
    while next.load(Ordering::Relaxed) - start < 3_016 {
        assert!(Instant::now() < deadline, "load too slow: {}", served.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served.kill9();
    let first = sender.await.unwrap();
    stop.store(true, Ordering::Release);
    assert!(first.len() >= 3_000, "{} answered", first.len());

    // What the dead process left: its ring's file, holding events its
    // segments do not have yet. Opening the spool writes them out.
    assert!(
        spooled(&spool).len() < first.len(),
        "the test means to find events in the ring, not only in segments"
    );
    drop(
        Spool::open(SpoolConfig {
            ring_dir: Some(ring.clone()),
            ..SpoolConfig::new(&spool)
        })
        .unwrap(),
    );
    let counts = by_tag(&spooled(&spool));
    let missing: Vec<_> = first.iter().filter(|t| counts.get(t) != Some(&1)).collect();
    assert!(
        missing.is_empty(),
        "{} answered decisions without exactly one event, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    // Restarted on the same spool: it appends after what survived.
    let mut served = Served::start_with(&dir, &args);
    let client = Arc::new(served.client().await);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(load(client.clone(), 4, stop.clone(), next.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    let second = sender.await.unwrap();
    assert!(!second.is_empty());
    drop(client);
    assert!(served.terminate().success());

    let events = spooled(&spool);
    let counts = by_tag(&events);
    for tag in first.iter().chain(&second) {
        assert_eq!(counts.get(tag), Some(&1), "tag {tag}");
    }
    // Nothing was written twice, and ids are unique.
    assert!(counts.values().all(|&n| n == 1));
    let ids: HashSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), events.len());
    // The events say what was decided.
    let grant = events
        .iter()
        .find(|e| e.credential == "h10301:12:1005")
        .unwrap();
    assert_eq!(
        (grant.verdict, grant.reason),
        (Verdict::Grant, Reason::Granted)
    );
    assert_eq!(
        (grant.door.as_deref(), grant.site.as_deref()),
        (Some("lobby"), Some("hq"))
    );
    assert_eq!(grant.holder.as_deref(), Some("erin"));
    assert_eq!(grant.client, "accessd gateway");
    assert!(events.iter().any(|e| e.reason == Reason::HolderInactive));
    // Thousands of lines into a closed pipe: a quiet, successful end.
    let out = crate::cli::into_closed_pipe(&["events", "tail", "--dir", &spool_arg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.is_empty(), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

/// Ids in the events table `table`.
async fn table_ids(endpoint: &str, table: &str) -> HashSet<String> {
    let client = aws_sdk_dynamodb::Client::new(&sdk_config(&settings(endpoint)).await);
    let mut ids = HashSet::new();
    let mut start = None;
    loop {
        let Ok(page) = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
        else {
            return ids;
        };
        for item in page.items() {
            if let Some(AttributeValue::S(id)) = item.get("id") {
                ids.insert(id.clone());
            }
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return ids;
        }
    }
}

/// Waits until the table holds every id of `events`.
async fn until_shipped(served: &Served, endpoint: &str, table: &str, events: &[AccessEvent]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids = table_ids(endpoint, table).await;
        let missing = events
            .iter()
            .filter(|e| !ids.contains(&e.id.to_string()))
            .count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} events never shipped:\n{}",
            events.len(),
            served.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn tables(endpoint: &str, name: &str, records: &[Record]) {
    let admin = Admin::new(AwsBackend::connect(&settings(endpoint), name).await);
    admin
        .create_tables(Some(&format!("{name}-events")))
        .await
        .unwrap();
    admin.put_all(records, |_| {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_shipped_and_an_outage_only_delays_them() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let dynamodb = start_on(port);
    tables(&endpoint, "evt", &site()).await;
    let dir = temp_dir("events-ship");
    let spool = dir.join("events");
    let mut served = Served::start(
        &dir,
        &endpoint,
        "evt",
        &["--events-dir", spool.to_str().unwrap()],
    );
    let client = served.client().await;
    let ask = |n: u64| {
        let client = &client;
        async move {
            let card: CredentialKey = format!("h10301:1:{n}").parse().unwrap();
            client
                .decide(&Request {
                    reader: "r1",
                    credential: card,
                    pin: None,
                })
                .await
                .unwrap()
        }
    };
    for n in 0..20 {
        ask(n % 3).await;
    }
    let before = until_spooled(&spool, 20, &served).await;
    assert_eq!(before.len(), 20);
    until_shipped(&served, &endpoint, "evt-events", &before).await;

    // The item reads back as the event, keyed as documented.
    let items = aws_sdk_dynamodb::Client::new(&sdk_config(&settings(&endpoint)).await)
        .query()
        .table_name("evt-events")
        .index_name("by_holder")
        .key_condition_expression("gsi1pk = :h")
        .expression_attribute_values(":h", AttributeValue::S("HOLDER#E1".into()))
        .send()
        .await
        .unwrap();
    let of_holder = items.items().len();
    assert!(
        of_holder > 0 && of_holder < 20,
        "card 1 only is E1's: {of_holder}"
    );
    let item = &items.items()[0];
    assert_eq!(item["pk"].as_s().unwrap(), "DOOR#d1");
    assert!(item["expires_at"].as_n().is_ok());
    let event = accessd_loader::events::ship::event_of_item(item).unwrap();
    assert!(before.contains(&event), "{event:?}");

    // The CLI reads both ends: the table by door, the spool as JSON lines.
    let lines = |args: &[&str]| -> Vec<AccessEvent> {
        let out = std::process::Command::new(crate::durable::bin())
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let queried = lines(&[
        "events",
        "query",
        "--table",
        "evt-events",
        "--door",
        "d1",
        "--since",
        "1h",
        "--endpoint-url",
        &endpoint,
        "--region",
        "us-east-1",
    ]);
    assert_eq!(queried, before, "all at door d1, in time order");
    let by_holder = lines(&[
        "events",
        "query",
        "--table",
        "evt-events",
        "--holder",
        "E1",
        "--endpoint-url",
        &endpoint,
        "--region",
        "us-east-1",
    ]);
    assert_eq!(by_holder.len(), of_holder);
    assert!(by_holder.iter().all(|e| e.holder.as_deref() == Some("E1")));
    let tailed = lines(&["events", "tail", "--dir", spool.to_str().unwrap()]);
    assert_eq!(tailed, before);
    let last = lines(&[
        "events",
        "tail",
        "--dir",
        spool.to_str().unwrap(),
        "--last",
        "3",
    ]);
    assert_eq!(last, before[17..]);

    // DynamoDB goes away: decisions go on, their events wait in the spool.
    dynamodb.stop();
    for n in 0..30 {
        ask(n % 3).await;
    }
    let during: Vec<_> = until_spooled(&spool, 50, &served)
        .await
        .into_iter()
        .skip(20)
        .collect();
    assert_eq!(during.len(), 30);
    // It comes back (moto starts empty: the tables are made again).
    let _dynamodb = start_on(port);
    tables(&endpoint, "evt", &site()).await;
    until_shipped(&served, &endpoint, "evt-events", &during).await;
    drop(client);
    assert!(served.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_reach_an_eventbridge_bus() {
    let endpoint = moto().endpoint.clone();
    let mut records = site();
    records.push(credential(66, CredentialStatus::Stolen));
    tables(&endpoint, "alarmed", &records).await;
    let config = sdk_config(&settings(&endpoint)).await;
    let bridge = aws_sdk_eventbridge::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    bridge
        .create_event_bus()
        .name("security")
        .send()
        .await
        .unwrap();
    let queue = sqs
        .create_queue()
        .queue_name("alarms")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    // The documented pattern.
    bridge
        .put_rule()
        .name("accessd-alarms")
        .event_bus_name("security")
        .event_pattern(r#"{"source": ["accessd"], "detail-type": ["accessd alarm"]}"#)
        .send()
        .await
        .unwrap();
    bridge
        .put_targets()
        .rule("accessd-alarms")
        .event_bus_name("security")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("q")
                .arn(arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let dir = temp_dir("events-alarm");
    let spool = dir.join("events");
    let mut served = Served::start(
        &dir,
        &endpoint,
        "alarmed",
        &[
            "--events-dir",
            spool.to_str().unwrap(),
            "--alarm-bus",
            "security",
            "--alarm-burst-denies",
            "3",
        ],
    );
    let client = served.client().await;
    let stolen: CredentialKey = "h10301:1:66".parse().unwrap();
    let answer = client
        .decide(&Request {
            reader: "r1",
            credential: stolen,
            pin: None,
        })
        .await
        .unwrap();
    assert_eq!(
        Reason::from_code(answer.reason),
        Some(Reason::CredentialStolen)
    );
    // Two more denies at r1: with the first, a burst of three.
    for n in [900, 901] {
        let card: CredentialKey = format!("h10301:1:{n}").parse().unwrap();
        client
            .decide(&Request {
                reader: "r1",
                credential: card,
                pin: None,
            })
            .await
            .unwrap();
    }

    let mut kinds = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while kinds.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "alarms seen: {kinds:?}\n{}",
            served.log()
        );
        let got = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in got.messages() {
            let body: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            assert_eq!(body["source"], "accessd");
            assert_eq!(body["detail-type"], "accessd alarm");
            let kind = body["detail"]["kind"].as_str().unwrap().to_owned();
            kinds.insert(kind, body["detail"].clone());
        }
    }
    let stolen = &kinds["stolen_credential"];
    assert_eq!(stolen["event"]["credential"], "h10301:1:66");
    assert_eq!(stolen["event"]["reason"], "credential_stolen");
    assert_eq!(stolen["event"]["door"], "d1");
    let burst = &kinds["deny_burst"];
    assert_eq!(
        (burst["reader"].as_str(), burst["denies"].as_u64()),
        (Some("r1"), Some(3))
    );
    drop(client);
    assert!(served.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_follow_prints_decisions_as_they_are_made() {
    use std::io::BufRead;

    let dir = temp_dir("events-follow");
    let spool = dir.join("events");
    let spool_arg = spool.to_str().unwrap().to_owned();
    let mut served =
        Served::start_with(&dir, &["--site", EXAMPLE_SITE, "--events-dir", &spool_arg]);
    let client = served.client().await;
    let ask = |tag: i64| {
        let client = &client;
        async move {
            let card: CredentialKey = "h10301:12:1001".parse().unwrap();
            let request = Request {
                reader: "lobby-in",
                credential: card,
                pin: None,
            };
            client.decide_at(&request, Some(tag)).await.unwrap();
        }
    };
    ask(1).await;
    let mut tail = std::process::Command::new(crate::durable::bin())
        .args(["events", "tail", "--dir", &spool_arg, "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = |what: &str| {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no line for {what}"));
        serde_json::from_str::<AccessEvent>(&line).unwrap()
    };
    // What was there, then what comes.
    assert_eq!(next("the first").reader_time.unwrap().as_millisecond(), 1);
    ask(2).await;
    ask(3).await;
    assert_eq!(next("the second").reader_time.unwrap().as_millisecond(), 2);
    assert_eq!(next("the third").reader_time.unwrap().as_millisecond(), 3);
    tail.kill().unwrap();
    tail.wait().unwrap();
    drop(client);
    assert!(served.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_lookups_read_a_holders_older_events_from_the_events_table() {
    use crate::support::http::{self, get, until};

    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let dynamodb = start_on(port);
    tables(&endpoint, "evl", &site()).await;
    let dir = temp_dir("events-lookup");
    let serve = |spool: &Path| {
        let args = [
            "--dynamodb-table",
            "evl",
            "--endpoint-url",
            &endpoint,
            "--region",
            "us-east-1",
            "--stream-poll-ms",
            "50",
            "--events-dir",
            spool.to_str().unwrap(),
        ];
        http::Served::start(&dir, &args, &[])
    };

    // A first server decides and ships; then it and its spool are gone.
    let first_spool = dir.join("events-1");
    let mut first = serve(&first_spool);
    let client = first.client().await;
    for n in 0..12 {
        let card: CredentialKey = format!("h10301:1:{}", n % 3).parse().unwrap();
        let request = Request {
            reader: "r1",
            credential: card,
            pin: None,
        };
        client.decide(&request).await.unwrap();
    }
    let shipped = until(&first, "12 events spooled", || async {
        let events = spooled(&first_spool);
        (events.len() >= 12).then_some(events)
    })
    .await;
    let holder = shipped
        .iter()
        .find_map(|e| e.holder.clone())
        .expect("some card has a holder");
    let theirs: Vec<&AccessEvent> = shipped
        .iter()
        .filter(|e| e.holder.as_ref() == Some(&holder))
        .collect();
    assert!(!theirs.is_empty() && theirs.len() < shipped.len());
    until(&first, "events shipped", || async {
        let ids = table_ids(&endpoint, "evl-events").await;
        shipped
            .iter()
            .all(|e| ids.contains(&e.id.to_string()))
            .then_some(())
    })
    .await;
    drop(client);
    assert!(first.terminate().success());
    std::fs::remove_dir_all(&first_spool).unwrap();

    // A second server, its spool empty: the holder's events come from the
    // table, newest first, with the last one at their door.
    let mut second = serve(&dir.join("events-2"));
    let addr = second.http().await;
    let path = format!("/v1/holders/{holder}");
    let found = until(&second, "the holder in the snapshot", || async {
        let reply = get(addr, &path).await;
        (reply.status == 200 && !reply.json()["holder"].is_null()).then(|| reply.json())
    })
    .await;
    let recent: Vec<AccessEvent> = serde_json::from_value(found["recent"].clone()).unwrap();
    let mut expected: Vec<AccessEvent> = theirs.iter().map(|e| (*e).clone()).collect();
    expected.reverse();
    let ids = |events: &[AccessEvent]| events.iter().map(|e| e.id).collect::<HashSet<_>>();
    assert_eq!(ids(&recent), ids(&expected), "{found}");
    assert!(
        recent.windows(2).all(|w| w[0].time >= w[1].time),
        "newest first: {found}"
    );
    assert_eq!(found["events_table"]["table"], "evl-events");
    assert_eq!(found["events_table"]["read"], theirs.len());
    assert!(found["events_table"]["error"].is_null(), "{found}");
    let newest = expected.iter().max_by_key(|e| e.time).unwrap();
    let door = newest.door.as_deref().unwrap();
    assert_eq!(found["doors"][door]["time"], found["recent"][0]["time"]);

    // DynamoDB gone: the lookup still answers, from the spool, and says why
    // the table is missing from it.
    dynamodb.stop();
    let reply = get(addr, &path).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let found = reply.json();
    assert_eq!(found["recent"].as_array().map(Vec::len), Some(0), "{found}");
    let error = found["events_table"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("evl-events"), "{found}");
    assert!(second.terminate().success());
}
