//! The HTTP listener of `accessd serve`, run as a child process: probes,
//! status, metrics, the decide and explain API (agreeing with QUIC and
//! with each other), bad input, and the authentication rule.

use std::time::Duration;

use accessd_engine::{CredentialKey, Reason, Request};
use serde_json::{Value, json};

use crate::support::http::{Served, get, post, request, temp_dir, until};
use crate::support::moto::{free_port, start_on};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/site.toml");

/// Every card of the example site, and one it does not know.
fn example_cards() -> Vec<String> {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let mut cards: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("card = \""))
        .map(|l| l.trim_end_matches('"').to_owned())
        .collect();
    assert!(cards.len() >= 10, "{cards:?}");
    cards.push("h10301:99:9999".into());
    cards
}

/// Requests over every non-anti-passback reader of the example site (and
/// an unknown one), every card, without PIN, with the right PIN and a
/// wrong one: (reader, card, pin).
fn example_requests() -> Vec<(String, String, Option<String>)> {
    let readers = [
        "lobby-in",
        "lobby-out",
        "server-room-in",
        "loading-dock-in",
        "vault-in",
        "no-such-reader",
    ];
    let mut out = Vec::new();
    for reader in readers {
        for card in example_cards() {
            for pin in [None, Some("2468"), Some("1111")] {
                out.push((reader.to_owned(), card.clone(), pin.map(str::to_owned)));
            }
        }
    }
    out
}

fn as_json(requests: &[(String, String, Option<String>)]) -> String {
    let items: Vec<Value> = requests
        .iter()
        .map(|(reader, card, pin)| match pin {
            Some(pin) => json!({ "reader": reader, "card": card, "pin": pin }),
            None => json!({ "reader": reader, "card": card }),
        })
        .collect();
    Value::Array(items).to_string()
}

/// The minute of the wall clock: schedules change only on minutes, so two
/// runs in the same minute see the same schedules.
fn minute() -> i64 {
    jiff::Timestamp::now().as_second() / 60
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decide_over_http_agrees_with_quic_and_explain_agrees_with_decide() {
    let dir = temp_dir("agree");
    let mut served = Served::start(&dir, &["--site", EXAMPLE], &[]);
    let http = served.http().await;
    let client = served.client().await;
    let requests = example_requests();
    assert!(requests.len() <= accessd_protocol::MAX_BATCH);
    let body = as_json(&requests);

    // The same batch over QUIC and HTTP, within one wall-clock minute
    // (retried once if the minute turned in between).
    let mut compared = false;
    for _ in 0..2 {
        let start = minute();
        let engine: Vec<(CredentialKey, &str, Option<&[u8]>)> = requests
            .iter()
            .map(|(r, c, p)| {
                (
                    c.parse().unwrap(),
                    r.as_str(),
                    p.as_deref().map(str::as_bytes),
                )
            })
            .collect();
        let quic_requests: Vec<Request<'_>> = engine
            .iter()
            .map(|&(credential, reader, pin)| Request {
                reader,
                credential,
                pin,
            })
            .collect();
        let quic = client.decide_batch(&quic_requests).await.unwrap();
        let reply = post(http, "/v1/decide", &body).await;
        if minute() != start {
            continue;
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
        let answers = reply.json();
        let answers = answers.as_array().unwrap();
        assert_eq!(answers.len(), quic.len());
        let mut reasons = std::collections::BTreeSet::new();
        for ((q, h), r) in quic.iter().zip(answers).zip(&requests) {
            let reason = Reason::from_code(q.reason).unwrap();
            reasons.insert(reason);
            assert_eq!(h["code"], json!(q.reason), "{r:?}: {h}");
            assert_eq!(h["reason"], json!(reason.as_str()), "{r:?}: {h}");
            assert_eq!(
                h["verdict"],
                json!(format!("{:?}", q.verdict).to_lowercase())
            );
            assert_eq!(h["unlock_ms"], json!(q.unlock_ms), "{r:?}");
            assert_eq!(h["snapshot_version"], json!(q.snapshot_version));
            assert!(h["snapshot_age_ms"].is_u64());
        }
        // Not a table of one answer: the batch met many reasons.
        assert!(reasons.len() >= 6, "{reasons:?}");
        compared = true;
        break;
    }
    assert!(compared, "the minute turned twice");

    // Explain, then decide, one request at a time (anti-passback readers
    // included: explain records nothing, so the decide after it sees the
    // same presence), in the same minute.
    let mut explained = 0;
    for reader in [
        "garage-in",
        "garage-in",
        "garage-out",
        "lobby-in",
        "server-room-in",
    ] {
        for card in ["h10301:12:1001", "h10301:12:1005", "h10301:12:990"] {
            for pin in [None, Some("2468")] {
                let mut one = json!({ "reader": reader, "card": card });
                if let Some(pin) = pin {
                    one["pin"] = json!(pin);
                }
                let start = minute();
                let e = post(http, "/v1/explain", &one.to_string()).await;
                let d = post(http, "/v1/decide", &one.to_string()).await;
                if minute() != start {
                    continue;
                }
                assert_eq!((e.status, d.status), (200, 200), "{} {}", e.body, d.body);
                let (e, d) = (e.json(), d.json());
                for key in ["verdict", "reason", "code", "unlock_ms", "snapshot_version"] {
                    assert_eq!(e[key], d[key], "{one}: {key}: {e} vs {d}");
                }
                let steps = e["steps"].as_array().unwrap();
                assert_eq!(steps[0]["rule"], "reader", "{e}");
                if d["verdict"] == "deny" {
                    let last = steps.last().unwrap();
                    assert_eq!(last["outcome"], "deny", "{e}");
                    assert_eq!(last["reason"], d["reason"], "{e}");
                }
                explained += 1;
            }
        }
    }
    assert!(explained >= 20, "{explained}");

    // Explain at an instant: Monday 23:00 in New York is outside the
    // lobby's schedules, level by level.
    let reply = post(
        http,
        "/v1/explain",
        r#"{"reader":"lobby-in","card":"h10301:12:1001","at":"2026-11-30T23:00:00-05:00"}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let e = reply.json();
    assert_eq!(e["reason"], "outside_schedule", "{e}");
    assert_eq!(e["door"], "lobby");
    assert_eq!(e["holder"], "alice");
    assert_eq!(
        e["local_time"],
        "2026-11-30T23:00:00-05:00 Monday (America/New_York)"
    );
    let levels = e["levels"].as_array().unwrap();
    assert!(
        levels
            .iter()
            .any(|l| l["covers_door"] == true && l["schedule_active"] == false),
        "{e}"
    );
    // A time without an offset is the reader's site time: the same answer.
    let site_time = post(
        http,
        "/v1/explain",
        r#"{"reader":"lobby-in","card":"h10301:12:1001","at":"2026-11-30T23:00"}"#,
    )
    .await;
    assert_eq!(site_time.status, 200, "{}", site_time.body);
    assert_eq!(site_time.json()["at"], e["at"]);
    assert_eq!(site_time.json()["local_time"], e["local_time"]);
    // ...which an unknown reader does not have.
    let unknown = post(
        http,
        "/v1/explain",
        r#"[{"reader":"lobby-in","card":"h10301:12:1001"},{"reader":"nowhere","card":"h10301:12:1001","at":"2026-11-30T23:00"}]"#,
    )
    .await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert_eq!(unknown.json()["field"], "[1].at", "{}", unknown.body);
    drop(client);
    assert!(served.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_status_metrics_and_bad_input() {
    let dir = temp_dir("probes");
    let mut served = Served::start(
        &dir,
        &[
            "--site",
            EXAMPLE,
            "--checkpoint",
            dir.join("state.ckpt").to_str().unwrap(),
            "--events-dir",
            dir.join("events").to_str().unwrap(),
        ],
        &[],
    );
    let http = served.http().await;
    let _client = served.client().await;

    let health = get(http, "/healthz").await;
    assert_eq!(
        (health.status, health.json()["alive"].clone()),
        (200, json!(true))
    );
    let ready = get(http, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["ready"], true);

    let status = get(http, "/v1/status").await;
    assert_eq!(status.status, 200);
    let s = status.json();
    assert_eq!(s["accessd_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["source"]["kind"], "site_file");
    assert_eq!(s["source"]["path"], EXAMPLE);
    assert_eq!(s["ready"], true);
    assert!(s["snapshot"]["version"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["snapshot"]["stats"]["readers"], 9, "{s}");
    assert_eq!(
        s["snapshot"]["stats"]["credentials"],
        json!(example_cards().len() - 1),
        "{s}"
    );
    assert_eq!(s["quic"]["connections"], 1, "{s}");
    assert_eq!(s["quic"]["addr"], served.quic.to_string());
    // The event trail: a spool (a site file ships nothing).
    assert_eq!(s["events"]["dir"], json!(dir.join("events")), "{s}");
    assert!(s["events"]["spool_bytes"].as_u64().unwrap() >= 8, "{s}");
    assert_eq!(s["events"]["events_table"], Value::Null, "{s}");
    assert!(s["uptime_s"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        s["checkpoint"]["path"],
        dir.join("state.ckpt").to_str().unwrap()
    );

    // A decision over HTTP shows in the metrics.
    let d = post(
        http,
        "/v1/decide",
        r#"{"reader":"lobby-in","card":"h10301:12:1002"}"#,
    )
    .await;
    assert_eq!(d.json()["reason"], "holder_inactive", "{}", d.body);
    let m = get(http, "/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m.headers.contains("text/plain"), "{}", m.headers);
    assert!(
        m.body.contains("accessd_decisions_total{verdict=\"deny\"}"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("accessd_http_requests_total{route=\"/v1/decide\",status=\"200\"}"),
        "{}",
        m.body
    );

    // Bad input: 400 with the field named; never a decision.
    let cases = [
        ("{", "body"),
        (r#"{"reader":"lobby-in"}"#, "card"),
        (r#"{"reader":"lobby-in","card":"h10301:12"}"#, "card"),
        (
            r#"{"reader":"lobby-in","card":"h10301:12:1001","pin":"12ab"}"#,
            "pin",
        ),
        (
            r#"{"reader":"lobby-in","card":"h10301:12:1001","at":"2026-11-30T09:00:00Z"}"#,
            "at",
        ),
        (
            r#"[{"reader":"lobby-in","card":"h10301:12:1001"},{"reader":"","card":"h10301:12:1001"}]"#,
            "[1].reader",
        ),
    ];
    for (body, field) in cases {
        let reply = post(http, "/v1/decide", body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        let e = reply.json();
        assert_eq!(e["field"], field, "{body}: {e}");
        assert!(e["error"].as_str().unwrap().len() > 5);
        assert!(e.get("verdict").is_none());
    }
    // A body beyond the limit (2 MB) is refused, as JSON too.
    let huge = format!("{{\"reader\":\"{}\"}}", "x".repeat(3 << 20));
    let reply = post(http, "/v1/decide", &huge).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.json()["field"], "body");
    let wrong_method = get(http, "/v1/decide").await;
    assert_eq!(wrong_method.status, 405);
    let missing = get(http, "/nope").await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());
    assert!(served.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_needs_a_token_and_the_token_is_checked() {
    let dir = temp_dir("auth");
    // No token: refused at start, with the way out in the message (the
    // flag by its old name, --metrics-addr, follows the same rule).
    let served = Served::start(
        &dir,
        &["--site", EXAMPLE, "--metrics-addr", "0.0.0.0:0"],
        &[],
    );
    let log = until(&served, "refusal", || {
        let log = served.log();
        async move { log.contains("error:").then_some(log) }
    })
    .await;
    assert!(
        log.contains("refusing to serve HTTP on `0.0.0.0:0`"),
        "{log}"
    );
    assert!(log.contains("--http-token-file"), "{log}");
    assert_eq!(served.terminate().code(), Some(2));

    // With a token: probes open, the rest needs it.
    let token = "s3cret-token-0123456789";
    let file = dir.join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let mut served = Served::start(
        &dir,
        &[
            "--site",
            EXAMPLE,
            "--http-addr",
            "0.0.0.0:0",
            "--http-token-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    let addr = served.http().await;
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()));
    assert_eq!(get(http, "/healthz").await.status, 200);
    assert_eq!(get(http, "/readyz").await.status, 200);
    let bearer = format!("Bearer {token}");
    let wrong = format!("Bearer {token}x");
    // The console's page holds no data and is open; its data is not.
    for path in ["/ui/", "/ui/app.js", "/ui/style.css"] {
        let page = get(http, path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            page.headers
                .contains("content-security-policy: default-src 'self'"),
            "{path}: {}",
            page.headers
        );
    }
    for path in [
        "/v1/status",
        "/metrics",
        "/v1/readers",
        "/v1/holders/alice",
        "/v1/cards/h10301:12:1001",
        "/v1/live",
    ] {
        let none = get(http, path).await;
        assert_eq!(none.status, 401, "{path}");
        assert!(
            none.headers.contains("www-authenticate: Bearer"),
            "{}",
            none.headers
        );
        let bad = request(http, "GET", path, &[("Authorization", &wrong)], None).await;
        assert_eq!(bad.status, 401, "{path}");
        if path == "/v1/live" {
            // A stream: answered 409 here, since this server records no events.
            let good = request(http, "GET", path, &[("Authorization", &bearer)], None).await;
            assert_eq!(good.status, 409, "{path}: {}", good.body);
            assert!(good.body.contains("--events-dir"), "{}", good.body);
            continue;
        }
        let good = request(http, "GET", path, &[("Authorization", &bearer)], None).await;
        assert_eq!(good.status, 200, "{path}: {}", good.body);
    }
    let body = r#"{"reader":"lobby-in","card":"h10301:12:1001"}"#;
    let refused = post(http, "/v1/decide", body).await;
    assert_eq!(refused.status, 401);
    assert!(refused.json().get("verdict").is_none());
    let allowed = request(
        http,
        "POST",
        "/v1/decide",
        &[("Authorization", &bearer)],
        Some(body),
    )
    .await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert!(allowed.json()["verdict"].is_string());
    assert!(served.terminate().success());

    // A token file too short is refused.
    std::fs::write(&file, "short").unwrap();
    let served = Served::start(
        &dir,
        &[
            "--site",
            EXAMPLE,
            "--http-token-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    let log = until(&served, "refusal", || {
        let log = served.log();
        async move { log.contains("error:").then_some(log) }
    })
    .await;
    assert!(log.contains("at least 16 characters"), "{log}");
}

/// `/readyz` body and status.
async fn readyz(http: std::net::SocketAddr) -> (u16, Value) {
    let r = get(http, "/readyz").await;
    (r.status, r.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_flips_as_the_snapshot_appears_and_as_the_data_ages() {
    // A private moto, started only after the server: DynamoDB unreachable
    // at start.
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let name = "http-ready";
    let dir = temp_dir("ready");
    let mut served = Served::start(
        &dir,
        &[
            "--dynamodb-table",
            name,
            "--endpoint-url",
            &endpoint,
            "--region",
            "us-east-1",
            "--stream-poll-ms",
            "50",
            "--max-staleness",
            "3s",
        ],
        &[],
    );
    let http = served.http().await;
    let (status, body) = readyz(http).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "not_ready", "{body}");
    assert_eq!(body["snapshot_version"], 0);
    let s = get(http, "/v1/status").await.json();
    assert_eq!(s["source"]["kind"], "dynamodb");
    assert_eq!(s["source"]["table"], name);
    assert_eq!(s["ready"], false);
    // Decide and explain say the same as the probe.
    let d = post(http, "/v1/decide", r#"{"reader":"r1","card":"h10301:1:1"}"#)
        .await
        .json();
    assert_eq!(
        (d["reason"].clone(), d["code"].clone()),
        (json!("not_ready"), json!(121))
    );
    let e = post(
        http,
        "/v1/explain",
        r#"{"reader":"r1","card":"h10301:1:1"}"#,
    )
    .await
    .json();
    assert_eq!(e["reason"], "not_ready");
    assert_eq!(e["steps"][0]["rule"], "data", "{e}");

    // DynamoDB appears with the table: ready.
    let moto = start_on(port);
    let admin = crate::durable::table(&endpoint, name, &crate::dynamodb::site()).await;
    let body = until(&served, "ready", || async {
        let (status, body) = readyz(http).await;
        (status == 200).then_some(body)
    })
    .await;
    assert!(body["snapshot_version"].as_u64().unwrap() >= 1, "{body}");
    // The source goes live once it has read the stream to its end.
    let s = until(&served, "source live", || async {
        let s = get(http, "/v1/status").await.json();
        (s["source"]["state"] == "live").then_some(s)
    })
    .await;
    assert!(
        s["snapshot"]["stats"]["credentials"].as_u64().unwrap() >= 1,
        "{s}"
    );
    let d = post(http, "/v1/decide", r#"{"reader":"r1","card":"h10301:1:1"}"#)
        .await
        .json();
    assert_eq!(d["verdict"], "grant", "{d}");
    // A write shows in the status: per shard, the last sequence applied.
    assert!(!s["source"]["shards"].as_array().unwrap().is_empty(), "{s}");
    admin
        .put(&crate::dynamodb::credential(
            2,
            accessd_engine::CredentialStatus::Active,
        ))
        .await
        .unwrap();
    let s = until(&served, "the write in the status", || async {
        let s = get(http, "/v1/status").await.json();
        let applied = s["source"]["stream_records_applied"].as_u64() >= Some(1);
        let positioned = s["source"]["shards"]
            .as_array()
            .is_some_and(|shards| shards.iter().any(|sh| sh["last_sequence"].is_string()));
        (applied && positioned).then_some(s)
    })
    .await;
    assert!(s["source"]["last_sequence"].is_string(), "{s}");
    assert!(s["source"]["stream_lag_s"].is_number(), "{s}");
    // Lag shard by shard, for every shard of the stream (moto has one).
    let lags = s["source"]["shard_lag_s"].as_object().unwrap();
    for shard in s["source"]["shards"].as_array().unwrap() {
        let lag = &lags[shard["id"].as_str().unwrap()];
        assert!(lag.as_f64().is_some_and(|l| l >= 0.0), "{s}");
    }

    // DynamoDB gone: once the data is older than the policy, not ready,
    // and decisions (HTTP and QUIC) are stale_data.
    drop(moto);
    let body = until(&served, "stale", || async {
        let (status, body) = readyz(http).await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body["reason"], "stale_data", "{body}");
    assert!(body["snapshot_age_ms"].as_u64().unwrap() > 3000, "{body}");
    let d = post(http, "/v1/decide", r#"{"reader":"r1","card":"h10301:1:1"}"#)
        .await
        .json();
    assert_eq!(d["reason"], "stale_data", "{d}");
    let client = served.client().await;
    let q = client
        .decide(&Request {
            reader: "r1",
            credential: "h10301:1:1".parse().unwrap(),
            pin: None,
        })
        .await
        .unwrap();
    assert_eq!(Reason::from_code(q.reason), Some(Reason::StaleData));
    drop(client);
    tokio::time::timeout(Duration::from_secs(30), async { served.terminate() })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_one_json_object_a_line() {
    let dir = temp_dir("json-logs");
    let mut served = Served::start(&dir, &["--site", EXAMPLE, "--log-format", "json"], &[]);
    let http = served.http().await;
    assert_eq!(get(http, "/healthz").await.status, 200);
    let log = served.log();
    assert!(served.terminate().success());
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        assert!(
            line["level"].is_string() && line["fields"].is_object(),
            "{line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "site loaded"),
        "{log}"
    );
    // Text logs carry no colours when standard error is a file.
    let dir = temp_dir("text-logs");
    let mut served = Served::start(&dir, &["--site", EXAMPLE], &[]);
    served.http().await;
    let log = served.log();
    assert!(served.terminate().success());
    assert!(log.contains("site loaded"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log}");
}
