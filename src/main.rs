//! The `accessd` command: CLI, wiring and telemetry. Logic lives in the
//! library crates (`accessd-engine`, `accessd-protocol`, `accessd-loader`);
//! each subcommand is a module under `cmd/`.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// accessd: may this card pass this reader, now?
#[derive(Parser, Debug)]
#[command(name = "accessd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Decide one request (or a JSON-lines file of them) against a site file.
    Decide(cmd::decide::Args),
    /// Check a site file and print what it holds, or every problem in it.
    CheckSite(cmd::site::CheckArgs),
    /// Hash a PIN for a site file or DynamoDB item.
    PinHash(cmd::site::PinHashArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decide(args) => cmd::decide::run(args),
        Command::CheckSite(args) => cmd::site::check(args),
        Command::PinHash(args) => cmd::site::pin_hash(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
