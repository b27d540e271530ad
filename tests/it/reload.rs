//! Live changes to a running `accessd serve`: certificates rotated with a
//! connection open (SIGHUP), a served site file edited (watched), a bad
//! edit refused while the old site keeps serving, `POST /v1/reload`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use accessd_engine::{Reason, Request};
use accessd_protocol::{Client, TlsCredentials};
use serde_json::Value;

use crate::support::http::{Served, get, post, request, temp_dir, until};

/// A site where cards 1 and 2 may pass reader r1 at any time; `status`
/// is card 1's.
fn site(card1_status: &str, extra: &str) -> String {
    format!(
        r#"
[[sites]]
id = "hq"
time_zone = "UTC"

[[doors]]
id = "d1"
site = "hq"

[[readers]]
id = "r1"
door = "d1"

[[schedules]]
id = "always"
intervals = [{{ days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], start = "00:00", end = "00:00" }}]

[[access_levels]]
id = "staff"
doors = ["d1"]
schedule = "always"

[[cardholders]]
id = "E1"

[[credentials]]
card = "h10301:1:1"
holder = "E1"
status = "{card1_status}"

[[assignments]]
holder = "E1"
level = "staff"
{extra}
"#
    )
}

/// Replaces `path` atomically, as an editor or a config tool should.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn credentials(dir: &Path) -> TlsCredentials {
    TlsCredentials::from_pem_files(
        &dir.join("ca.pem"),
        &dir.join("gateway.pem"),
        &dir.join("gateway.key"),
    )
    .unwrap()
}

async fn ask(client: &Client, card: &str) -> (Reason, u64) {
    let answer = client
        .decide(&Request {
            reader: "r1",
            credential: card.parse().unwrap(),
            pin: None,
        })
        .await
        .unwrap();
    (
        Reason::from_code(answer.reason).unwrap(),
        answer.snapshot_version,
    )
}

async fn connects(quic: SocketAddr, tls: &TlsCredentials) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(5),
            Client::connect(quic, "localhost", tls)
        )
        .await,
        Ok(Ok(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_on_sighup_and_open_connections_keep_going() {
    let dir = temp_dir("reload-certs");
    let file = dir.join("site.toml");
    std::fs::write(&file, site("active", "")).unwrap();
    let mut served = Served::start(&dir, &["--site", file.to_str().unwrap()], &[]);
    let old = served.client().await;
    assert_eq!(ask(&old, "h10301:1:1").await.0, Reason::Granted);

    // A new PKI, put in place of the files the server was started with.
    let fresh = dir.join("fresh");
    let status = Command::new(env!("CARGO_BIN_EXE_accessd"))
        .args(["certs", "--out"])
        .arg(&fresh)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let new_tls = credentials(&fresh);
    let old_tls = credentials(&dir);
    assert!(
        !connects(served.quic, &new_tls).await,
        "new PKI before the reload"
    );
    for name in ["ca.pem", "server.pem", "server.key"] {
        let text = std::fs::read_to_string(fresh.join(name)).unwrap();
        replace(&dir.join(name), &text);
    }
    served.signal("-HUP");
    until(&served, "new certificates in use", || {
        let tls = new_tls.clone();
        let quic = served.quic;
        async move { connects(quic, &tls).await.then_some(()) }
    })
    .await;
    // The connection opened before the rotation keeps working ...
    assert_eq!(ask(&old, "h10301:1:1").await.0, Reason::Granted);
    // ... while a new one with the old PKI is refused.
    assert!(!connects(served.quic, &old_tls).await);
    assert!(served.log().contains("reloaded"), "{}", served.log());

    // Broken TLS files are refused: the current ones keep serving.
    replace(&dir.join("server.pem"), "not a certificate");
    let http = served.http().await;
    let reply = post(http, "/v1/reload", "").await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    let report = reply.json();
    assert_eq!(report["tls"]["result"], "refused", "{report}");
    assert!(connects(served.quic, &new_tls).await);
    assert_eq!(ask(&old, "h10301:1:1").await.0, Reason::Granted);
    drop(old);
    assert!(served.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_site_file_is_reloaded_on_change_and_a_bad_edit_keeps_the_old_site() {
    let dir = temp_dir("reload-site");
    let file = dir.join("site.toml");
    std::fs::write(&file, site("active", "")).unwrap();
    let ckpt = dir.join("state.ckpt");
    let mut served = Served::start(
        &dir,
        &[
            "--site",
            file.to_str().unwrap(),
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--checkpoint-interval",
            "50ms",
        ],
        &[],
    );
    let http = served.http().await;
    let client = served.client().await;
    let (reason, v1) = ask(&client, "h10301:1:1").await;
    assert_eq!(reason, Reason::Granted);

    // An edit is noticed without a signal: card 1 revoked.
    replace(&file, &site("revoked", ""));
    let v2 = until(&served, "the edit served", || async {
        let (reason, version) = ask(&client, "h10301:1:1").await;
        (reason == Reason::CredentialRevoked).then_some(version)
    })
    .await;
    assert!(v2 > v1, "{v1} -> {v2}");

    // A bad edit (a door of an unknown site) is refused whole: the old
    // site keeps serving, and the log and the metric say why.
    replace(
        &file,
        &site("active", "[[doors]]\nid = \"d2\"\nsite = \"nowhere\"\n"),
    );
    until(&served, "the bad edit refused", || {
        let log = served.log();
        async move { log.contains("reload refused").then_some(()) }
    })
    .await;
    let log = served.log();
    assert!(log.contains("unknown site `nowhere`"), "{log}");
    assert_eq!(
        ask(&client, "h10301:1:1").await,
        (Reason::CredentialRevoked, v2)
    );
    let metrics = request(http, "GET", "/metrics", &[], None).await.body;
    assert!(
        metrics.contains("accessd_reloads_total{what=\"site\",result=\"refused\"}"),
        "{metrics}"
    );
    // Asked to reload, it says the same.
    let reply = post(http, "/v1/reload", "").await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    let report: Value = reply.json();
    assert_eq!(report["site"]["result"], "refused", "{report}");
    assert!(
        report["site"]["error"]
            .as_str()
            .unwrap()
            .contains("unknown site `nowhere`"),
        "{report}"
    );
    assert_eq!(report["tls"]["result"], "reloaded", "{report}");
    let status = get(http, "/v1/status").await.json();
    assert_eq!(status["snapshot"]["version"], v2, "{status}");

    // Fixed, and SIGHUP: served at once (the watcher may get there
    // first; either way the new site serves).
    replace(
        &file,
        &site(
            "active",
            "[[credentials]]\ncard = \"h10301:1:2\"\nholder = \"E1\"\n",
        ),
    );
    served.signal("-HUP");
    let v3 = until(&served, "the fixed site served", || async {
        let (reason, version) = ask(&client, "h10301:1:2").await;
        (reason == Reason::Granted).then_some(version)
    })
    .await;
    assert!(v3 > v2);
    assert_eq!(ask(&client, "h10301:1:1").await.0, Reason::Granted);
    // Nothing to do now: unchanged.
    let reply = post(http, "/v1/reload", "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["site"]["result"], "unchanged");
    drop(client);
    assert!(served.terminate().success());

    // The checkpoint holds the reloaded site: a restart serves card 2.
    let info = accessd_loader::checkpoint::Checkpoint::open(&ckpt)
        .unwrap()
        .info();
    assert_eq!(info.credentials, 2);
}

/// The data's age as an answer carries it.
async fn age(client: &Client) -> (Reason, u32) {
    let answer = client
        .decide(&Request {
            reader: "r1",
            credential: "h10301:1:1".parse().unwrap(),
            pin: None,
        })
        .await
        .unwrap();
    (
        Reason::from_code(answer.reason).unwrap(),
        answer.snapshot_age_ms,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_site_file_keeps_its_data_fresh_and_a_refused_edit_lets_it_age() {
    let dir = temp_dir("reload-fresh");
    let file = dir.join("site.toml");
    std::fs::write(&file, site("active", "")).unwrap();
    let mut served = Served::start(
        &dir,
        &["--site", file.to_str().unwrap(), "--max-staleness", "2s"],
        &[],
    );
    let client = served.client().await;
    // Past the policy's age since start, the unchanged file still counts
    // as confirmed: answers stay young and grant.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let (reason, age_ms) = age(&client).await;
        assert_eq!(reason, Reason::Granted, "age {age_ms} ms");
        assert!(age_ms < 2_000, "age {age_ms} ms");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An edit that cannot be served: the file on disk is no longer what
    // is served, so the data ages until the policy refuses it.
    replace(
        &file,
        &site("active", "[[doors]]\nid = \"d2\"\nsite = \"nowhere\"\n"),
    );
    until(&served, "stale data refused", || async {
        (age(&client).await.0 == Reason::StaleData).then_some(())
    })
    .await;
    // Fixed: served, fresh again.
    replace(&file, &site("active", ""));
    until(&served, "fresh again", || async {
        (age(&client).await.0 == Reason::Granted).then_some(())
    })
    .await;
    drop(client);
    assert!(served.terminate().success());
}
