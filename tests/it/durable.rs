//! Durable state, tested by crashing: `accessd serve` as a child process
//! against moto, killed with SIGKILL while writes stream into the table,
//! started offline from its checkpoint, started with no DynamoDB at all,
//! and facing a DynamoDB that goes away and comes back re-created.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use accessd_engine::{CredentialKey, CredentialStatus, Reason, Record, Request, Verdict};
use accessd_loader::checkpoint::Checkpoint;
use accessd_loader::{Admin, AwsBackend, AwsSettings};
use accessd_protocol::Client;

use crate::dynamodb::{credential, site};
use crate::support::http;
use crate::support::moto::{free_port, moto, start_on};

pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_accessd")
}

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("durable-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) fn settings(endpoint: &str) -> AwsSettings {
    AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.to_owned()),
        static_credentials: Some(("testing".into(), "testing".into())),
    }
}

pub(crate) async fn table(endpoint: &str, name: &str, records: &[Record]) -> Admin {
    let backend = AwsBackend::connect(&settings(endpoint), name).await;
    let admin = Admin::new(backend);
    admin.create_tables(None).await.unwrap();
    admin.put_all(records, |_| {}).await.unwrap();
    admin
}

fn card(n: u64) -> CredentialKey {
    format!("h10301:1:{n}").parse().unwrap()
}

/// `accessd serve` running as a child process with its checkpoint in its
/// directory (written every 50 ms) and no HTTP listener: the shared
/// [`http::Served`] with these settings.
pub(crate) struct Served(http::Served);

impl Served {
    /// Starts `accessd serve` on the table at `endpoint`, with certificates
    /// and the checkpoint in `dir`.
    pub(crate) fn start(dir: &Path, endpoint: &str, table: &str, extra: &[&str]) -> Self {
        let mut args = vec!["--dynamodb-table", table, "--endpoint-url", endpoint];
        args.extend(["--region", "us-east-1", "--stream-poll-ms", "50"]);
        args.extend(extra);
        Self::start_with(dir, &args)
    }

    /// Starts `accessd serve` with these source arguments, with
    /// certificates and the checkpoint in `dir`.
    pub(crate) fn start_with(dir: &Path, source: &[&str]) -> Self {
        let checkpoint = dir.join("state.ckpt");
        let mut args = source.to_vec();
        args.extend(["--checkpoint", checkpoint.to_str().unwrap()]);
        args.extend(["--checkpoint-interval", "50ms", "--http-addr", "off"]);
        Self(http::Served::start(dir, &args, &[]))
    }

    pub(crate) fn log(&self) -> String {
        self.0.log()
    }

    /// A gateway client, connected once the server answers.
    pub(crate) async fn client(&mut self) -> Client {
        self.0.client().await
    }

    /// SIGKILL: no shutdown, no last checkpoint.
    pub(crate) fn kill9(self) {
        self.0.kill9();
    }

    /// SIGTERM, and the exit status.
    pub(crate) fn terminate(self) -> std::process::ExitStatus {
        self.0.terminate()
    }
}

async fn ask(client: &Client, n: u64) -> (Verdict, Reason, u64) {
    ask_at(client, "r1", n).await
}

async fn ask_at(client: &Client, reader: &str, n: u64) -> (Verdict, Reason, u64) {
    let request = Request {
        reader,
        credential: card(n),
        pin: None,
    };
    let answer = client.decide(&request).await.unwrap();
    let reason = Reason::from_code(answer.reason).unwrap();
    (answer.verdict, reason, answer.snapshot_version)
}

/// Waits until `check` holds for the answers of the server, or fails with
/// the last answers and the server's log.
async fn until(served: &Served, client: &Client, what: &str, cards: &[(u64, Verdict)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut wrong = Vec::new();
        for &(n, expected) in cards {
            let (verdict, reason, _) = ask(client, n).await;
            if verdict != expected {
                wrong.push(format!("card {n}: {verdict:?} {reason}"));
            }
        }
        if wrong.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still wrong: {wrong:?}\nlog:\n{}",
            served.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn checkpoint_credentials(path: &Path) -> usize {
    Checkpoint::open(path).map_or(0, |c| c.info().credentials)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_writes_stream_in_loses_no_acknowledged_write() {
    let endpoint = moto().endpoint.clone();
    let name = "durable-kill9";
    let admin = table(&endpoint, name, &site()).await;
    let dir = temp_dir("kill9");
    let mut served = Served::start(&dir, &endpoint, name, &[]);
    let client = served.client().await;
    until(&served, &client, "first snapshot", &[(1, Verdict::Grant)]).await;

    // Phase A, while serving: 20 new cards, card 1 revoked half-way.
    let mut expected = vec![];
    for n in 100..120 {
        admin
            .put(&credential(n, CredentialStatus::Active))
            .await
            .unwrap();
        expected.push((n, Verdict::Grant));
        if n == 110 {
            admin
                .put(&credential(1, CredentialStatus::Revoked))
                .await
                .unwrap();
        }
    }
    // A checkpoint from the middle of the stream, not the end of it.
    let path = dir.join("state.ckpt");
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoint_credentials(&path) < 5 {
        assert!(Instant::now() < deadline, "no checkpoint: {}", served.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(client);
    served.kill9();

    // Phase B, while accessd is dead: more cards, and one of phase A's
    // revoked (a replay of its older, active image must not win).
    for n in 120..140 {
        admin
            .put(&credential(n, CredentialStatus::Active))
            .await
            .unwrap();
        expected.push((n, Verdict::Grant));
    }
    admin
        .put(&credential(105, CredentialStatus::Revoked))
        .await
        .unwrap();
    expected.retain(|(n, _)| *n != 105);
    expected.push((105, Verdict::Deny));
    expected.push((1, Verdict::Deny));

    let mut served = Served::start(&dir, &endpoint, name, &[]);
    let client = served.client().await;
    until(&served, &client, "every acknowledged write", &expected).await;
    assert_eq!(ask(&client, 1).await.1, Reason::CredentialRevoked);
    assert_eq!(ask(&client, 105).await.1, Reason::CredentialRevoked);
    let log = served.log();
    assert!(log.contains("serving from the checkpoint"), "{log}");
    assert!(
        !log.contains("bootstrap done"),
        "resumed without a scan: {log}"
    );
    drop(client);
    assert!(served.terminate().success());
    // The graceful stop wrote a checkpoint a server can start from.
    let info = Checkpoint::open(&path).unwrap().info();
    assert_eq!(info.credentials, 41);
    let verify = Command::new(bin())
        .args(["checkpoint", "verify"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_dynamodb_at_start_serves_the_checkpoint_or_not_ready() {
    let endpoint = moto().endpoint.clone();
    let name = "durable-offline";
    table(&endpoint, name, &site()).await;
    let dir = temp_dir("offline");
    // Nothing listens here: DynamoDB is unreachable.
    let dead = format!("http://127.0.0.1:{}", free_port());

    // No checkpoint and no DynamoDB: running, answering not_ready.
    let mut served = Served::start(&dir, &dead, name, &[]);
    let client = served.client().await;
    let (verdict, reason, version) = ask(&client, 1).await;
    assert_eq!(
        (verdict, reason, version),
        (Verdict::Deny, Reason::NotReady, 0)
    );
    drop(client);
    assert!(served.terminate().success());
    assert!(!dir.join("state.ckpt").exists());

    // A run with DynamoDB leaves a checkpoint behind.
    let mut served = Served::start(&dir, &endpoint, name, &[]);
    let client = served.client().await;
    until(&served, &client, "first snapshot", &[(1, Verdict::Grant)]).await;
    drop(client);
    assert!(served.terminate().success());

    // DynamoDB gone again: the checkpoint serves at once, with its age,
    // and a staleness policy refuses once the data is too old.
    let mut served = Served::start(&dir, &dead, name, &["--max-staleness", "1h"]);
    let client = served.client().await;
    let (verdict, _, version) = ask(&client, 1).await;
    assert_eq!(verdict, Verdict::Grant);
    assert!(version >= 1);
    assert!(
        served
            .log()
            .contains("serving from the checkpoint in place")
    );
    // Then rebuilt in memory behind it, offline all the same: the same
    // answer from the rebuilt data.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !served.log().contains("checkpoint rebuilt in memory") {
        assert!(Instant::now() < deadline, "never rebuilt: {}", served.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ask(&client, 1).await.0, Verdict::Grant);
    drop(client);
    assert!(served.terminate().success());
    let mut served = Served::start(&dir, &dead, name, &["--max-staleness", "1ms"]);
    let client = served.client().await;
    let (verdict, reason, _) = ask(&client, 1).await;
    assert_eq!((verdict, reason), (Verdict::Deny, Reason::StaleData));
    drop(client);
    assert!(served.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_truncated_and_foreign_checkpoints_fall_back_to_a_bootstrap() {
    let endpoint = moto().endpoint.clone();
    let dir = temp_dir("corrupt");
    table(&endpoint, "durable-corrupt-a", &site()).await;
    table(&endpoint, "durable-corrupt-b", &site()).await;
    // A good checkpoint of table a.
    let mut served = Served::start(&dir, &endpoint, "durable-corrupt-a", &[]);
    let client = served.client().await;
    until(&served, &client, "first snapshot", &[(1, Verdict::Grant)]).await;
    drop(client);
    assert!(served.terminate().success());
    let path = dir.join("state.ckpt");
    let good = std::fs::read(&path).unwrap();

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("durable-corrupt-a", flipped, "checksum mismatch"),
        (
            "durable-corrupt-a",
            good[..good.len() / 2].to_vec(),
            "torn or truncated",
        ),
        // Table a's checkpoint for table b.
        (
            "durable-corrupt-b",
            good.clone(),
            "not of DynamoDB table `durable-corrupt-b`",
        ),
    ];
    for (table, bytes, why) in cases {
        std::fs::write(&path, bytes).unwrap();
        let mut served = Served::start(&dir, &endpoint, table, &[]);
        let client = served.client().await;
        until(&served, &client, why, &[(1, Verdict::Grant)]).await;
        let log = served.log();
        assert!(
            log.contains("checkpoint refused") && log.contains(why),
            "{why}: {log}"
        );
        assert!(log.contains("bootstrap done"), "{log}");
        drop(client);
        assert!(served.terminate().success());
        // ... and replaced by a good one of the table served.
        Checkpoint::open(&path)
            .unwrap()
            .check_source(&accessd_loader::checkpoint::CheckpointSource::Table {
                table: table.to_owned(),
            })
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_going_away_and_coming_back_recreated_is_followed() {
    // A private moto, to stop and start it again (its tables live in
    // memory: a restart is a re-created table with a new stream).
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let private = start_on(port);
    let name = "durable-recreated";
    table(&endpoint, name, &site()).await;
    let dir = temp_dir("recreated");
    let mut served = Served::start(&dir, &endpoint, name, &[]);
    let client = served.client().await;
    until(&served, &client, "first snapshot", &[(1, Verdict::Grant)]).await;

    drop(private);
    // DynamoDB gone: the snapshot keeps serving.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !served.log().contains("stream read failed") {
        assert!(
            Instant::now() < deadline,
            "no failed read: {}",
            served.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ask(&client, 1).await.0, Verdict::Grant);
    let _private = start_on(port);
    let mut records = site();
    records.retain(|r| !matches!(r, Record::Credential(_)));
    records.push(credential(1, CredentialStatus::Revoked));
    table(&endpoint, name, &records).await;
    until(
        &served,
        &client,
        "the re-created table",
        &[(1, Verdict::Deny)],
    )
    .await;
    assert_eq!(ask(&client, 1).await.1, Reason::CredentialRevoked);
    drop(client);
    assert!(served.terminate().success());
}

/// A site with a hard anti-passback area that card 1 may enter at any time.
const PASSBACK_SITE: &str = r#"
[[sites]]
id = "hq"
time_zone = "UTC"

[[areas]]
id = "garage"
passback = "hard"

[[doors]]
id = "gate"
site = "hq"
area = "garage"

[[readers]]
id = "gate-in"
door = "gate"
direction = "in"

[[readers]]
id = "gate-out"
door = "gate"
direction = "out"

[[schedules]]
id = "always"
intervals = [{ days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], start = "00:00", end = "00:00" }]

[[access_levels]]
id = "staff"
doors = ["gate"]
schedule = "always"

[[cardholders]]
id = "E1"

[[credentials]]
card = "h10301:1:1"
holder = "E1"

[[assignments]]
holder = "E1"
level = "staff"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_file_checkpoint_keeps_presence_across_kill_9_and_a_changed_file_wins() {
    let dir = temp_dir("site");
    let site = dir.join("site.toml");
    std::fs::write(&site, PASSBACK_SITE).unwrap();
    let site_arg = site.to_str().unwrap().to_owned();
    let path = dir.join("state.ckpt");

    let mut served = Served::start_with(&dir, &["--site", &site_arg]);
    let client = served.client().await;
    assert_eq!(ask_at(&client, "gate-in", 1).await.1, Reason::Granted);
    assert_eq!(ask_at(&client, "gate-in", 1).await.1, Reason::AntiPassback);
    // The passage reaches the checkpoint within an interval; then crash.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Checkpoint::open(&path).map_or(0, |c| c.info().presence) == 0 {
        assert!(
            Instant::now() < deadline,
            "no presence checkpointed: {}",
            served.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(client);
    served.kill9();

    // Restarted: E1 is still inside, the data came from the checkpoint.
    let mut served = Served::start_with(&dir, &["--site", &site_arg]);
    let client = served.client().await;
    assert_eq!(ask_at(&client, "gate-in", 1).await.1, Reason::AntiPassback);
    assert!(
        served
            .log()
            .contains("site served from the checkpoint in place"),
        "{}",
        served.log()
    );
    // Served in place at first, then from the rebuilt builder: the same
    // answer either side of the swap.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !served.log().contains("checkpoint rebuilt in memory") {
        assert!(Instant::now() < deadline, "never rebuilt: {}", served.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ask_at(&client, "gate-in", 1).await.1, Reason::AntiPassback);
    drop(client);
    assert!(served.terminate().success());

    // The site file changes (card 1 revoked): the file wins over the
    // checkpoint's data, presence is kept.
    std::fs::write(
        &site,
        PASSBACK_SITE.replace(
            "holder = \"E1\"\n\n[[assign",
            "holder = \"E1\"\nstatus = \"revoked\"\n\n[[assign",
        ),
    )
    .unwrap();
    let mut served = Served::start_with(&dir, &["--site", &site_arg]);
    let client = served.client().await;
    assert_eq!(
        ask_at(&client, "gate-in", 1).await.1,
        Reason::CredentialRevoked
    );
    let log = served.log();
    assert!(
        log.contains("site file changed since the checkpoint"),
        "{log}"
    );
    drop(client);
    assert!(served.terminate().success());
    let info = Checkpoint::open(&path).unwrap().info();
    assert_eq!(info.presence, 1);
    assert_eq!(info.credentials, 1);
}
