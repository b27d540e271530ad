//! `accessd seed`: fill a table with a synthetic site of a realistic shape
//! (the engine's `synth::site`), deterministic for a given `--seed` and
//! `--now`.

use std::process::ExitCode;

use accessd_engine::synth::{SynthParams, site};
use accessd_loader::Admin;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use jiff::Timestamp;

use super::dynamodb::{TableArgs, init_logging, runtime};

/// Arguments of `accessd seed`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    table: TableArgs,
    /// Cardholders (each with one credential, every 20th with two).
    #[arg(long, default_value_t = 1000)]
    holders: usize,
    /// Doors (two readers each).
    #[arg(long, default_value_t = 200)]
    doors: usize,
    /// Access levels.
    #[arg(long, default_value_t = 50)]
    levels: usize,
    /// Give every n-th credential a PIN (0: none).
    #[arg(long, default_value_t = 10)]
    pin_every: usize,
    /// Random seed: the same seed and --now give the same items.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The instant validity windows are placed around (RFC 3339).
    /// Default: today, 00:00 UTC.
    #[arg(long)]
    now: Option<Timestamp>,
    /// Create the tables first (as `accessd admin create-tables`).
    #[arg(long)]
    create: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    init_logging();
    let now = match args.now {
        Some(now) => now,
        None => {
            // Whole days since the epoch: deterministic for a day.
            let day = 86_400;
            Timestamp::from_second(Timestamp::now().as_second().div_euclid(day) * day)
                .context("cannot compute the start of today")?
        }
    };
    let records = site(&SynthParams {
        holders: args.holders,
        doors: args.doors,
        levels: args.levels,
        seed: args.seed,
        now,
        pin_every: args.pin_every,
    });
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(records.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} items {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    runtime()?.block_on(async {
        let admin = Admin::new(args.table.backend().await);
        if args.create {
            let events = format!("{}-events", args.table.table);
            admin.create_tables(Some(&events)).await?;
        }
        admin
            .put_all(&records, |n| bar.inc(n as u64))
            .await
            .context("seeding failed")
    })?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "wrote {} items to `{}` in {seconds:.1} s ({:.0} items/s)",
        records.len(),
        args.table.table,
        records.len() as f64 / seconds.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}
