//! `accessd checkpoint inspect|verify FILE`: what a checkpoint holds, and
//! whether it can be served from.

use std::path::PathBuf;
use std::process::ExitCode;

use accessd_loader::checkpoint::Checkpoint;
use anyhow::Context;

/// Arguments of `accessd checkpoint`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print what a checkpoint holds: version, source, snapshot version
    /// and age, counts, stream positions, size.
    Inspect {
        /// The checkpoint file.
        file: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Verify a checkpoint whole (header, checksum, layout, every record):
    /// exit 0 if a server could start from it, 1 with the reason if not.
    Verify {
        /// The checkpoint file.
        file: PathBuf,
    },
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Inspect { file, json } => {
            let checkpoint = Checkpoint::open(&file)
                .with_context(|| format!("cannot use checkpoint `{}`", file.display()))?;
            let info = checkpoint.info();
            if json {
                println!("{}", serde_json::to_string(&info)?);
                return Ok(ExitCode::SUCCESS);
            }
            let age = jiff::Timestamp::now().duration_since(info.fresh_as_of);
            println!("{}", file.display());
            println!("  format version   {}", info.format_version);
            println!("  size             {} bytes", info.bytes);
            println!("  source           {}", info.source);
            println!("  written at       {}", info.written_at);
            println!("  snapshot version {}", info.snapshot_version);
            println!(
                "  data as of       {} ({:.0} s ago)",
                info.fresh_as_of,
                age.as_secs_f64()
            );
            println!("  small records    {}", info.small_records);
            println!("  cardholders      {}", info.cardholders);
            println!("  assignments      {}", info.assignments);
            println!("  credentials      {}", info.credentials);
            println!("  presence entries {}", info.presence);
            if let Some(arn) = &info.stream_arn {
                println!("  stream           {arn}");
                for shard in &info.shards {
                    println!(
                        "    {}  after {}{}{}",
                        shard.id,
                        shard.last_sequence.as_deref().unwrap_or("(nothing read)"),
                        shard
                            .parent
                            .as_deref()
                            .map(|p| format!("  parent {p}"))
                            .unwrap_or_default(),
                        if shard.finished { "  drained" } else { "" }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { file } => {
            let result = Checkpoint::open(&file).and_then(|c| c.restore().map(|r| (c, r)));
            match result {
                Ok((checkpoint, restored)) if restored.refused == 0 => {
                    let info = checkpoint.info();
                    println!(
                        "{}: ok ({}, version {}, {} credentials)",
                        file.display(),
                        info.source,
                        info.snapshot_version,
                        info.credentials
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Ok((_, restored)) => {
                    eprintln!(
                        "{}: {} records refused by this build",
                        file.display(),
                        restored.refused
                    );
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
