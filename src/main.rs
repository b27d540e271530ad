//! The `accessd` command: CLI, wiring and telemetry. Logic lives in the
//! library crates (`accessd-engine`, `accessd-protocol`, `accessd-loader`);
//! each subcommand is a module under `cmd/`.

mod cmd;
mod config;
mod http;
mod mix;
mod reload;
mod telemetry;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// mimalloc: a load of a large site file frees millions of small strings
/// on another thread than the one that made them, which glibc's malloc
/// does under its arenas' locks with consolidation (a third of the time of
/// a million-holder load), and it gives freed memory back to the system on
/// its own.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// accessd: may this card pass this reader, now?
#[derive(Parser, Debug)]
#[command(name = "accessd", version, about, long_about = None)]
struct Cli {
    /// How logs are written to standard error: `text` (colours only at a
    /// terminal) or `json` (one object a line, for collectors).
    #[arg(long, global = true, value_enum, default_value_t = telemetry::LogFormat::Text)]
    log_format: telemetry::LogFormat,
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
    /// Write the DynamoDB table: create it, put or delete records, revoke,
    /// suspend or reinstate a credential.
    Admin(cmd::admin::Args),
    /// Fill a DynamoDB table with a synthetic site (deterministic with --seed).
    Seed(cmd::seed::Args),
    /// Benchmarks of the DynamoDB source: propagation, bootstrap, builder.
    BenchDynamodb(cmd::dynamodb_bench::Args),
    /// Benchmarks of checkpoints: size, write, restore, cold start of
    /// `serve` from one, bootstrap memory.
    BenchCheckpoint(cmd::checkpoint_bench::Args),
    /// Serve decisions over QUIC (mutual TLS) from a site file or a
    /// DynamoDB table; settings from flags, `ACCESSD_*` variables and
    /// `--config FILE`, in that order.
    #[command(args_override_self = true)]
    Serve(Box<cmd::serve::Args>),
    /// Check a config file of `serve` and print the effective settings.
    Config(cmd::config::Args),
    /// Inspect or verify a checkpoint file.
    Checkpoint(cmd::checkpoint::Args),
    /// Read access events: the local spool (`tail`) or the events table
    /// (`query`).
    Events(cmd::events::Args),
    /// Ask a running server for one decision.
    Check(cmd::check::Args),
    /// Load-test a running server; latency histogram and throughput.
    Load(cmd::load::Args),
    /// Write a development CA, server, gateway and reader certificates.
    Certs(cmd::certs::Args),
    /// The whole path on loopback: demo site, server, decisions, load.
    Demo(cmd::demo::Args),
}

fn main() -> ExitCode {
    // `serve`'s config file and ACCESSD_* variables become flags ahead of
    // the command line's own (see config.rs).
    let argv = match config::expand_args(
        std::env::args_os().collect(),
        Cli::command(),
        &config::accessd_env(),
    ) {
        Ok((argv, _)) => argv,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    telemetry::set_log_format(cli.log_format);
    // A reader that went away (`accessd ... | head`) ends the output, not
    // the program with a panic: printing to a closed pipe stops quietly.
    telemetry::quiet_on_closed_pipe();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli.command)));
    match result {
        Ok(Ok(code)) => code,
        Ok(Err(e)) if telemetry::is_closed_pipe(&e) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(payload) if telemetry::is_closed_pipe_panic(payload.as_ref()) => ExitCode::SUCCESS,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Decide(args) => cmd::decide::run(args),
        Command::CheckSite(args) => cmd::site::check(args),
        Command::PinHash(args) => cmd::site::pin_hash(args),
        Command::Admin(args) => cmd::admin::run(args),
        Command::Seed(args) => cmd::seed::run(args),
        Command::BenchDynamodb(args) => cmd::dynamodb_bench::run(args),
        Command::BenchCheckpoint(args) => cmd::checkpoint_bench::run(args),
        Command::Serve(args) => cmd::serve::run(*args),
        Command::Check(args) => cmd::check::run(args),
        Command::Checkpoint(args) => cmd::checkpoint::run(args),
        Command::Events(args) => cmd::events::run(args),
        Command::Load(args) => cmd::load::run(args),
        Command::Certs(args) => cmd::certs::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Config(args) => cmd::config::run(args),
    }
}
