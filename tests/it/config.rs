//! `serve --config FILE`: the file, `ACCESSD_*` variables over it, flags
//! over both; `accessd config check` with every problem at once.

use std::process::Command;

use serde_json::json;

use crate::support::http::{Served, get, temp_dir};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/site.toml");

fn accessd(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_accessd"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn config_check_reports_every_problem_with_its_key() {
    let dir = temp_dir("config-check");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "listen = \"here\"\nmax_streams = -3\ncolour = \"blue\"\nmax_staleness = \"soon\"\ncert = [\"a\"]\nlog_format = \"xml\"\n",
    )
    .unwrap();
    let out = accessd(
        &["config", "check", file.to_str().unwrap()],
        &[("ACCESSD_IDLE_TIMEOUT_SECS", "x")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "key `listen`",
        "key `max_streams`",
        "key `colour`: unknown setting",
        "key `max_staleness`",
        "key `cert`",
        "key `log_format`",
        "ACCESSD_IDLE_TIMEOUT_SECS",
    ] {
        assert!(err.contains(key), "{key} missing:\n{err}");
    }
    // `serve` refuses the same file the same way, before starting.
    let out = accessd(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("6 problem(s)"));
}

#[test]
fn the_example_config_is_valid_and_check_says_where_each_setting_comes_from() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/accessd.toml");
    let out = accessd(
        &["config", "check", example],
        &[
            ("ACCESSD_MAX_STALENESS", "20m"),
            ("ACCESSD_HTTP_TOKEN", "ignored, not a setting"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("dynamodb_table = \"accessd\"  # file"),
        "{text}"
    );
    assert!(
        text.contains("max_staleness = \"20m\"  # env ACCESSD_MAX_STALENESS"),
        "{text}"
    );
    assert!(text.contains("max_connections = 4096  # default"), "{text}");
    assert!(text.contains("# site: not set"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_the_file_the_environment_overrides_it_and_flags_override_both() {
    let dir = temp_dir("config-serve");
    let file = dir.join("accessd.toml");
    std::fs::write(
        &file,
        format!(
            "site = \"{EXAMPLE}\"\nlisten = \"127.0.0.1:1\"\nmax_staleness = \"1h\"\ncheckpoint = \"{}\"\nlog_format = \"json\"\n",
            dir.join("state.ckpt").display()
        ),
    )
    .unwrap();
    // The helper adds --listen (a flag over the file's) and the TLS files.
    let mut served = Served::start(
        &dir,
        &["--config", file.to_str().unwrap()],
        &[("ACCESSD_MAX_STALENESS", "2h")],
    );
    let http = served.http().await;
    let s = get(http, "/v1/status").await.json();
    assert_eq!(s["source"]["path"], EXAMPLE, "{s}");
    assert_eq!(s["max_staleness_ms"], json!(2 * 3600 * 1000), "{s}");
    assert_eq!(s["quic"]["addr"], served.quic.to_string(), "{s}");
    assert_eq!(
        s["checkpoint"]["path"],
        dir.join("state.ckpt").to_str().unwrap()
    );
    // log_format from the file: JSON lines.
    let log = served.log();
    assert!(log.lines().all(|l| l.starts_with('{')), "{log}");
    assert!(served.terminate().success());
}

/// A stop the moment the server says it is serving (before its HTTP
/// listener and its tasks are up) is a clean stop: the signal handlers
/// were taken over before the listeners, not when a task first ran (a
/// SIGTERM in between ended the process by the default action).
#[test]
fn a_stop_signal_right_after_start_is_a_clean_stop() {
    let dir = temp_dir("stop-at-start");
    for round in 0..5 {
        let served = Served::start(&dir, &["--site", EXAMPLE], &[]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // Polls the log file: the line is the condition, nothing to await.
        while !served.log().contains("serving") {
            assert!(
                std::time::Instant::now() < deadline,
                "never serving: {}",
                served.log()
            );
            std::thread::yield_now();
        }
        let (status, log) = served.terminate_with_log();
        assert!(status.success(), "round {round}: {status}; log:\n{log}");
        assert!(log.contains("stopped"), "round {round}: {log}");
    }
}
