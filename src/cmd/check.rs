//! `accessd check`: one decision from a running server, over QUIC.

use std::process::ExitCode;

use accessd_engine::{CredentialKey, Reason, Request, Verdict};
use accessd_protocol::Client;
use anyhow::Context;

use super::serve::{ServerArgs, TlsArgs};

/// Arguments of `accessd check`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    target: ServerArgs,
    /// The reader id.
    #[arg(long)]
    reader: String,
    /// The card as FORMAT:FACILITY:NUMBER (e.g. h10301:12:34567) or uid:HEX.
    #[arg(long)]
    card: CredentialKey,
    /// PIN digits entered at the reader.
    #[arg(long)]
    pin: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Print the decision as one JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(check(args))
}

async fn check(args: Args) -> anyhow::Result<ExitCode> {
    let tls = args.tls.load()?;
    let client = Client::connect(args.target.server, &args.target.server_name, &tls)
        .await
        .with_context(|| format!("cannot connect to `{}`", args.target.server))?;
    let request = Request {
        reader: &args.reader,
        credential: args.card,
        pin: args.pin.as_deref().map(str::as_bytes),
    };
    let start = std::time::Instant::now();
    let r = client.decide(&request).await.context("no decision")?;
    let rtt = start.elapsed();
    client.close().await;
    let reason = r
        .reason()
        .map_or_else(|| format!("code_{}", r.reason), |x: Reason| x.to_string());
    if args.json {
        let line = serde_json::json!({
            "reader": args.reader,
            "card": args.card.to_string(),
            "verdict": r.verdict,
            "reason": reason,
            "code": r.reason,
            "unlock_ms": r.unlock_ms,
            "snapshot_version": r.snapshot_version,
            "snapshot_age_ms": r.snapshot_age_ms,
            "round_trip_us": rtt.as_micros() as u64,
        });
        println!("{line}");
    } else {
        let verdict = match r.verdict {
            Verdict::Grant => "GRANT",
            Verdict::Deny => "DENY",
        };
        println!(
            "{verdict}  {reason} (code {})  reader {}  card {}",
            r.reason, args.reader, args.card
        );
        if r.verdict == Verdict::Grant {
            println!("unlock {} ms", r.unlock_ms);
        }
        println!(
            "snapshot version {} (age {} ms), round trip {} µs",
            r.snapshot_version,
            r.snapshot_age_ms,
            rtt.as_micros()
        );
    }
    Ok(match r.verdict {
        Verdict::Grant => ExitCode::SUCCESS,
        Verdict::Deny => ExitCode::from(1),
    })
}
