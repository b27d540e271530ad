//! `accessd check-site` and `accessd pin-hash`, plus loading a site file
//! into a snapshot for the other subcommands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use accessd_engine::{Change, PinHash, SiteFile, Snapshot, SnapshotBuilder};
use anyhow::{Context, bail};
use jiff::Timestamp;

/// Arguments of `accessd check-site`.
#[derive(clap::Args, Debug)]
pub(crate) struct CheckArgs {
    /// The site file (TOML, see docs/site-file.md).
    #[arg(long)]
    site: PathBuf,
}

/// Arguments of `accessd pin-hash`.
#[derive(clap::Args, Debug)]
pub(crate) struct PinHashArgs {
    /// The PIN: 4 to 12 digits. Prefer `--pin-stdin` on shared machines.
    #[arg(long, conflicts_with = "pin_stdin")]
    pin: Option<String>,
    /// Read the PIN from the first line of standard input.
    #[arg(long)]
    pin_stdin: bool,
}

/// Reads and checks a site file; every problem is in the error.
pub(crate) fn read_site(path: &Path) -> anyhow::Result<SiteFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read site file `{}`", path.display()))?;
    SiteFile::parse(&text).with_context(|| format!("site file `{}` is not valid", path.display()))
}

/// Reads a site file and builds its snapshot, as of `now`.
pub(crate) fn load_snapshot(path: &Path, now: Timestamp) -> anyhow::Result<Snapshot> {
    let site = read_site(path)?;
    let mut builder = SnapshotBuilder::new();
    let refused = builder.apply_all(site.records.into_iter().map(Change::Upsert));
    if let Some((_, e)) = refused.first() {
        // SiteFile::parse already validated every record; this is a bug.
        bail!("site file record refused by the builder: {e}");
    }
    Ok(builder.publish(now))
}

pub(crate) fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let site = read_site(&args.site)?;
    println!("{}: ok", args.site.display());
    for (section, count) in site.counts() {
        println!("  {section:<14} {count}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn pin_hash(args: PinHashArgs) -> anyhow::Result<ExitCode> {
    let pin = match (args.pin, args.pin_stdin) {
        (Some(pin), _) => pin,
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the PIN from standard input")?;
            line.trim().to_owned()
        }
        (None, false) => bail!("give the PIN with --pin DIGITS or --pin-stdin"),
    };
    // The salt only has to differ between credentials, not be secret.
    let mut salt = [0u8; 16];
    fastrand::fill(&mut salt);
    let hash = PinHash::new(&pin, salt)?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}
