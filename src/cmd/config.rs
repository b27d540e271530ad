//! `accessd config check FILE`: checks a config file of `serve` (with the
//! `ACCESSD_*` environment over it, as `serve` would read them) and
//! prints the effective settings, where each comes from, secrets
//! redacted.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap::parser::ValueSource;

use crate::config::{Origin, accessd_env, expand_args};

/// Arguments of `accessd config`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Check a config file of `serve` and print the effective settings
    /// (file, `ACCESSD_*` environment, defaults), secrets redacted. Exit
    /// code 0 when `serve --config FILE` would accept them.
    Check {
        /// The config file (TOML; see deploy/accessd.toml).
        file: PathBuf,
    },
}

/// Whether a setting's value is a secret (an inline one: paths to secret
/// files are shown).
fn redact(key: &str, value: &str) -> String {
    let secret = ["token", "secret", "password"]
        .iter()
        .any(|w| key.contains(w))
        && !key.ends_with("_file");
    if secret {
        return "<redacted>".into();
    }
    // Credentials in a URL (`http://user:pass@host`).
    if let Some((scheme, rest)) = value.split_once("://")
        && let Some((_, host)) = rest.split_once('@')
    {
        return format!("{scheme}://<redacted>@{host}");
    }
    value.to_owned()
}

fn toml_value(value: &str) -> String {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())
        || value == "true"
        || value == "false"
    {
        value.to_owned()
    } else {
        toml::Value::String(value.to_owned()).to_string()
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Sub::Check { file } = args.command;
    let argv: Vec<OsString> = vec![
        "accessd".into(),
        "serve".into(),
        "--config".into(),
        file.clone().into(),
    ];
    let (argv, origins) = expand_args(argv, crate::Cli::command(), &accessd_env())?;
    let matches = crate::Cli::command()
        .try_get_matches_from(&argv)
        .map_err(|e| {
            let text = e.to_string();
            anyhow::anyhow!(
                "{}",
                text.lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
            )
        })
        .with_context(|| format!("config file `{}` cannot be served", file.display()))?;
    let serve = matches
        .subcommand_matches("serve")
        .context("no serve settings")?;
    println!(
        "# effective settings of `accessd serve --config {}`",
        file.display()
    );
    let mut command = crate::Cli::command();
    command.build();
    let serve_command = command
        .find_subcommand("serve")
        .context("no serve command")?;
    let mut keys: Vec<(String, String)> = serve_command
        .get_arguments()
        .filter_map(|a| {
            let key = a.get_long()?.replace('-', "_");
            (!["config", "help", "version"].contains(&key.as_str()))
                .then(|| (key, a.get_id().to_string()))
        })
        .collect();
    keys.sort();
    for (key, id) in keys {
        let origin = match serve.value_source(&id) {
            Some(ValueSource::DefaultValue) => "default".to_owned(),
            Some(_) => match origins.get(&key) {
                Some(Origin::File) => "file".to_owned(),
                Some(Origin::Env(name)) => format!("env {name}"),
                None => "command line".to_owned(),
            },
            None => {
                println!("# {key}: not set");
                continue;
            }
        };
        let values: Vec<String> = serve
            .get_raw(&id)
            .into_iter()
            .flatten()
            .map(|v| redact(&key, &v.to_string_lossy()))
            .collect();
        let value = values.join(",");
        println!("{key} = {}  # {origin}", toml_value(&value));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_paths_are_not() {
        assert_eq!(redact("http_token", "abc"), "<redacted>");
        assert_eq!(redact("http_token_file", "/etc/t"), "/etc/t");
        assert_eq!(
            redact("endpoint_url", "http://me:pw@db.local:8000"),
            "http://<redacted>@db.local:8000"
        );
        assert_eq!(redact("endpoint_url", "http://db.local"), "http://db.local");
    }
}
