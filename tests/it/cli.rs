//! The `accessd` binary's offline commands, run as a user would.

use std::io::Write;
use std::process::{Command, Output};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/site.toml");

fn accessd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_accessd"))
        .args(args)
        .output()
        .expect("run accessd")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn decide_prints_the_reason_and_exits_by_verdict() {
    let base = [
        "decide",
        "--site",
        EXAMPLE,
        "--at",
        "2026-11-30T09:00:00-05:00",
    ];
    let grant = accessd(
        &[
            &base[..],
            &["--reader", "lobby-in", "--card", "h10301:12:1001"],
        ]
        .concat(),
    );
    assert_eq!(grant.status.code(), Some(0), "{}", stdout(&grant));
    assert!(
        stdout(&grant).starts_with("GRANT  granted (code 0)"),
        "{}",
        stdout(&grant)
    );

    let deny = accessd(
        &[
            &base[..],
            &["--reader", "lobby-in", "--card", "h10301:12:992", "--json"],
        ]
        .concat(),
    );
    assert_eq!(deny.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(stdout(&deny).trim()).unwrap();
    assert_eq!(json["verdict"], "deny");
    assert_eq!(json["reason"], "credential_revoked");
    assert_eq!(json["code"], 106);
}

#[test]
fn decide_replays_a_requests_file_in_order_and_reports_bad_lines() {
    let mut file = tempfile();
    writeln!(
        file.1,
        r#"{{"reader":"garage-in","card":"h10301:12:1005","at":"2026-11-30T10:00:00-05:00"}}"#
    )
    .unwrap();
    writeln!(
        file.1,
        r#"{{"reader":"garage-in","card":"h10301:12:1005","at":"2026-11-30T10:01:00-05:00"}}"#
    )
    .unwrap();
    writeln!(file.1, "not json").unwrap();
    writeln!(file.1, r#"{{"reader":"server-room-in","card":"h10301:12:1001","pin":"2468","at":"2026-11-30T10:02:00-05:00"}}"#).unwrap();
    file.1.flush().unwrap();
    let out = accessd(&[
        "decide",
        "--site",
        EXAMPLE,
        "--requests",
        file.0.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad line makes the exit code 2"
    );
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["reason"], "granted");
    assert_eq!(
        lines[1]["reason"], "anti_passback",
        "presence carries across lines"
    );
    assert_eq!(lines[2]["line"], 3);
    assert!(lines[2]["error"].is_string());
    assert_eq!(lines[3]["reason"], "granted");
    std::fs::remove_file(&file.0).ok();
}

#[test]
fn a_bad_site_file_lists_every_problem_and_fails() {
    let mut file = tempfile();
    write!(
        file.1,
        "[[sites]]\nid = \"x\"\ntime_zone = \"Nowhere/Town\"\n[[doors]]\nid = \"d\"\nsite = \"y\"\n"
    )
    .unwrap();
    file.1.flush().unwrap();
    let out = accessd(&["check-site", "--site", file.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 1, sites[0] `x`") && err.contains("Nowhere/Town"),
        "{err}"
    );
    assert!(
        err.contains("line 4, doors[0] `d`: unknown site `y`"),
        "{err}"
    );
    std::fs::remove_file(&file.0).ok();
}

#[test]
fn pin_hash_output_is_accepted_by_a_site_file() {
    let out = accessd(&["pin-hash", "--pin", "13579"]);
    assert_eq!(out.status.code(), Some(0));
    let hash: accessd_engine::PinHash = stdout(&out).trim().parse().unwrap();
    assert!(hash.verify(b"13579"));
    assert!(!hash.verify(b"13578"));
    assert_eq!(accessd(&["pin-hash", "--pin", "12"]).status.code(), Some(2));
}

fn tempfile() -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!(
        "accessd-cli-{}-{}.txt",
        std::process::id(),
        fastrand::u64(..)
    ));
    let file = std::fs::File::create(&path).unwrap();
    (path, file)
}

/// Runs accessd with its standard output a pipe whose reading end is
/// already closed, as `accessd ... | head` is once `head` has exited.
pub(crate) fn into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_accessd"))
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run accessd")
}

#[test]
fn printing_to_a_closed_pipe_exits_quietly() {
    let mut file = tempfile();
    for minute in 0..2000 {
        writeln!(
            file.1,
            r#"{{"reader":"lobby-in","card":"h10301:12:1001","at":"2026-11-30T10:{:02}:00-05:00"}}"#,
            minute % 60
        )
        .unwrap();
    }
    file.1.flush().unwrap();
    let requests = file.0.to_str().unwrap().to_owned();
    let decide_one = [
        "decide",
        "--site",
        EXAMPLE,
        "--reader",
        "lobby-in",
        "--card",
        "h10301:12:1001",
        "--at",
        "2026-11-30T09:00:00-05:00",
    ];
    let runs: [&[&str]; 3] = [
        &["check-site", "--site", EXAMPLE],
        &decide_one,
        &["decide", "--site", EXAMPLE, "--requests", &requests],
    ];
    for args in runs {
        let out = into_closed_pipe(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
    // And `| head -1` for real: a reader that takes one line and leaves.
    let mut child = Command::new(env!("CARGO_BIN_EXE_accessd"))
        .args(["decide", "--site", EXAMPLE, "--requests", &requests])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.contains("\"reason\":\"granted\""), "{first}");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.is_empty(), "{err}");
    assert_eq!(out.status.code(), Some(0));
    std::fs::remove_file(&file.0).ok();
}
