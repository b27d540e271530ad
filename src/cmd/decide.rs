//! `accessd decide`: one decision, or a replay of many, against a site
//! file. An auditor's tool: "what would have happened".

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use accessd_engine::{CredentialKey, Decision, Presence, Request, Snapshot, Verdict, decide};
use anyhow::{Context, bail};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Arguments of `accessd decide`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The site file (TOML, see docs/site-file.md).
    #[arg(long)]
    site: PathBuf,
    /// The reader id.
    #[arg(long, required_unless_present = "requests")]
    reader: Option<String>,
    /// The card as FORMAT:FACILITY:NUMBER (e.g. h10301:12:34567) or uid:HEX.
    #[arg(long, required_unless_present = "requests")]
    card: Option<CredentialKey>,
    /// PIN digits entered at the reader.
    #[arg(long)]
    pin: Option<String>,
    /// Decide at this instant (RFC 3339, e.g. 2026-11-30T09:00:00-05:00)
    /// instead of now.
    #[arg(long)]
    at: Option<Timestamp>,
    /// Print the decision as one JSON object.
    #[arg(long)]
    json: bool,
    /// Decide every request of a JSON-lines file, in order, and print one
    /// JSON decision a line. Each line: {"reader", "card", "pin"?, "at"?}.
    #[arg(long, conflicts_with_all = ["reader", "card", "pin"])]
    requests: Option<PathBuf>,
}

/// One line of a `--requests` file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestLine {
    reader: String,
    card: CredentialKey,
    #[serde(default)]
    pin: Option<String>,
    #[serde(default)]
    at: Option<Timestamp>,
}

/// One line of output.
#[derive(Serialize)]
struct DecisionLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    reader: &'a str,
    card: String,
    at: Timestamp,
    verdict: Verdict,
    reason: accessd_engine::Reason,
    code: u16,
    unlock_ms: u32,
    snapshot_version: u64,
}

impl<'a> DecisionLine<'a> {
    fn new(line: Option<usize>, request: &Request<'a>, at: Timestamp, d: Decision) -> Self {
        Self {
            line,
            reader: request.reader,
            card: request.credential.to_string(),
            at,
            verdict: d.verdict,
            reason: d.reason,
            code: d.reason.code(),
            unlock_ms: d.unlock_ms,
            snapshot_version: d.snapshot_version,
        }
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let now = Timestamp::now();
    let snapshot = super::site::load_snapshot(&args.site, now)?;
    let presence = Presence::new();
    if let Some(path) = &args.requests {
        return replay(&snapshot, &presence, path, args.at.unwrap_or(now));
    }
    let (Some(reader), Some(card)) = (&args.reader, args.card) else {
        bail!("give --reader and --card, or --requests FILE");
    };
    let at = args.at.unwrap_or(now);
    let request = Request {
        reader,
        credential: card,
        pin: args.pin.as_deref().map(str::as_bytes),
    };
    let decision = decide(&snapshot, &presence, &request, at);
    if args.json {
        let line = DecisionLine::new(None, &request, at, decision);
        println!("{}", serde_json::to_string(&line)?);
    } else {
        let verdict = match decision.verdict {
            Verdict::Grant => "GRANT",
            Verdict::Deny => "DENY",
        };
        println!(
            "{verdict}  {} (code {})  reader {reader}  card {card}  at {at}",
            decision.reason,
            decision.reason.code()
        );
        if decision.verdict == Verdict::Grant {
            println!("unlock {} ms", decision.unlock_ms);
        }
        println!("snapshot version {}", decision.snapshot_version);
    }
    Ok(match decision.verdict {
        Verdict::Grant => ExitCode::SUCCESS,
        Verdict::Deny => ExitCode::from(1),
    })
}

/// Replays a JSON-lines file. A bad line prints an error object for that
/// line and the replay goes on; the exit code is then 2.
fn replay(
    snapshot: &Snapshot,
    presence: &Presence,
    path: &std::path::Path,
    default_at: Timestamp,
) -> anyhow::Result<ExitCode> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open requests file `{}`", path.display()))?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut bad = 0usize;
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("cannot read `{}`", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: RequestLine = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                bad += 1;
                let error = serde_json::json!({ "line": number, "error": e.to_string() });
                writeln!(out, "{error}")?;
                continue;
            }
        };
        let at = parsed.at.unwrap_or(default_at);
        let request = Request {
            reader: &parsed.reader,
            credential: parsed.card,
            pin: parsed.pin.as_deref().map(str::as_bytes),
        };
        let decision = decide(snapshot, presence, &request, at);
        let out_line = DecisionLine::new(Some(number), &request, at, decision);
        writeln!(out, "{}", serde_json::to_string(&out_line)?)?;
    }
    out.flush()?;
    if bad > 0 {
        eprintln!("{bad} request line(s) could not be read; see the \"error\" lines");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
