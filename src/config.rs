//! `accessd serve --config FILE`: every serve setting in one TOML file,
//! `ACCESSD_*` environment variables over it, flags over both.
//!
//! The file's keys are the flags of `serve` with `_` for `-`
//! (`--max-staleness` is `max_staleness`), and each environment variable
//! is `ACCESSD_` and the key in capitals (`ACCESSD_MAX_STALENESS`). So
//! there is one list of settings, the flags', and one parser per setting,
//! the flag's: the file and the environment become flags placed before
//! the command line's own, and the last occurrence of a flag wins.
//!
//! ```text
//!  accessd serve --config F --listen X
//!     ▼ expand_args
//!  accessd serve  --site=S --listen=A  (F)   --listen=B  (ACCESSD_LISTEN)   --config F --listen X
//! ```
//!
//! Checked in two stages, as flags are (raw, then validated): each key of
//! the file and each `ACCESSD_*` variable alone first, every problem at
//! once with its key (unknown keys, wrong types, values the flag's parser
//! refuses); then the whole command line by clap (conflicts, required
//! settings).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, bail};
use clap::error::{ContextKind, ContextValue};
use clap::{Arg, ArgAction, Command};

/// The environment variable prefix.
pub(crate) const ENV_PREFIX: &str = "ACCESSD_";

/// Where a setting came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The config file.
    File,
    /// This environment variable.
    Env(String),
}

/// Settings that are not read from a file or the environment.
const NOT_SETTINGS: &[&str] = &["config", "help", "version"];

/// The settings of `serve`: every flag with a long name, by key.
fn settings(serve: &Command) -> BTreeMap<String, Arg> {
    serve
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            let key = long.replace('-', "_");
            (!NOT_SETTINGS.contains(&key.as_str())).then(|| (key, arg.clone()))
        })
        .collect()
}

/// Whether a flag takes a value (else it is a switch, `true` or `false`).
fn takes_value(arg: &Arg) -> bool {
    !matches!(
        arg.get_action(),
        ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count
    )
}

/// Checks `value` for `arg` with the flag's own parser, alone; the
/// message of the refusal if it is refused.
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    let Some(long) = arg.get_long() else {
        return Ok(());
    };
    let lone = Arg::new("value")
        .long("value")
        .value_parser(arg.get_value_parser().clone())
        .action(ArgAction::Set);
    let result = Command::new("check")
        .no_binary_name(true)
        .disable_help_flag(true)
        .arg(lone)
        .try_get_matches_from([format!("--value={value}")]);
    match result {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            let mut message = first
                .trim_start_matches("error: ")
                .replace("'--value <value>'", &format!("`--{long}`"));
            if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
                message.push_str(&format!(" (one of: {})", valid.join(", ")));
            }
            Err(message)
        }
    }
}

/// A TOML value as the flag's text: strings and numbers, switches as
/// `true`/`false`.
fn as_flag_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// The flags one setting becomes, or the problem with it. `source` names
/// it in problems (`key \`listen\``, `ACCESSD_LISTEN`).
fn flags_of(arg: &Arg, key: &str, text: &str, source: &str) -> Result<Vec<String>, String> {
    let long = format!("--{}", key.replace('_', "-"));
    if takes_value(arg) {
        check_value(arg, text).map_err(|e| format!("{source}: {e}"))?;
        // One word, so a value starting with `-` stays a value.
        Ok(vec![format!("{long}={text}")])
    } else {
        match text {
            "true" => Ok(vec![long]),
            "false" => Ok(Vec::new()),
            _ => Err(format!("{source}: must be true or false, not `{text}`")),
        }
    }
}

/// The flags a config file stands for, with each key's origin; every
/// problem at once.
fn file_flags(
    path: &Path,
    settings: &BTreeMap<String, Arg>,
) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file `{}`", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("config file `{}` is not valid TOML", path.display()))?;
    let mut problems = Vec::new();
    let mut flags = Vec::new();
    for (key, value) in &table {
        let Some(arg) = settings.get(key) else {
            let hint = if key == "config" {
                " (a config file cannot name another)".to_owned()
            } else {
                String::new()
            };
            problems.push(format!("key `{key}`: unknown setting{hint}"));
            continue;
        };
        let Some(text) = as_flag_text(value) else {
            problems.push(format!(
                "key `{key}`: must be a string, a number or a boolean, not an {}",
                value.type_str()
            ));
            continue;
        };
        match flags_of(arg, key, &text, &format!("key `{key}`")) {
            Ok(f) => flags.push((key.clone(), f)),
            Err(p) => problems.push(p),
        }
    }
    if !problems.is_empty() {
        bail!(
            "config file `{}` has {} problem(s):\n  {}",
            path.display(),
            problems.len(),
            problems.join("\n  ")
        );
    }
    Ok(flags)
}

/// The flags `ACCESSD_*` variables stand for; every problem at once.
/// Variables that name no setting are left alone (the environment holds
/// other things, such as the systemd unit's own variables).
fn env_flags(
    settings: &BTreeMap<String, Arg>,
    env: &[(String, String)],
) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let mut problems = Vec::new();
    let mut flags = Vec::new();
    for (key, arg) in settings {
        let name = format!("{ENV_PREFIX}{}", key.to_uppercase());
        let Some((_, value)) = env.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        match flags_of(arg, key, value, &name) {
            Ok(f) => flags.push((key.clone(), f)),
            Err(p) => problems.push(p),
        }
    }
    if !problems.is_empty() {
        bail!(
            "environment: {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    Ok(flags)
}

/// The command line with `serve`'s config file and `ACCESSD_*` variables
/// turned into flags ahead of its own, and the origin of every setting
/// they set. Other commands are left as they are. `cli` is the whole
/// command (`Cli::command()`), `env` the environment.
pub(crate) fn expand_args(
    argv: Vec<OsString>,
    cli: Command,
    env: &[(String, String)],
) -> anyhow::Result<(Vec<OsString>, BTreeMap<String, Origin>)> {
    let mut origins = BTreeMap::new();
    let mut cli = cli;
    cli.build();
    // The subcommand is the first word that is neither an option nor the
    // value of one of accessd's own options (`--log-format json`).
    let mut at = None;
    let mut words = argv.iter().enumerate().skip(1);
    while let Some((i, word)) = words.next() {
        let Some(text) = word.to_str() else { break };
        if let Some(long) = text.strip_prefix("--") {
            let takes = cli
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .is_some_and(takes_value);
            if takes {
                words.next();
            }
            continue;
        }
        if !text.starts_with('-') {
            at = (text == "serve").then_some(i);
            break;
        }
    }
    let Some(at) = at else {
        return Ok((argv, origins));
    };
    let Some(serve) = cli.find_subcommand("serve") else {
        return Ok((argv, origins));
    };
    let settings = settings(serve);
    let rest = argv.get(at + 1..).unwrap_or_default();
    let config = rest.iter().enumerate().find_map(|(i, a)| {
        let a = a.to_str()?;
        match a.strip_prefix("--config") {
            Some("") => rest.get(i + 1).cloned(),
            Some(v) => v.strip_prefix('=').map(OsString::from),
            None => None,
        }
    });
    let mut inserted: Vec<String> = Vec::new();
    let mut problems = Vec::new();
    let env_set = match env_flags(&settings, env) {
        Ok(f) => f,
        Err(e) => {
            problems.push(format!("{e:#}"));
            Vec::new()
        }
    };
    if let Some(path) = &config {
        match file_flags(Path::new(path), &settings) {
            Ok(flags) => {
                for (key, f) in flags {
                    // The environment overrides the file: leave it out.
                    if env_set.iter().any(|(k, _)| *k == key) {
                        continue;
                    }
                    inserted.extend(f);
                    origins.insert(key, Origin::File);
                }
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    for (key, f) in env_set {
        inserted.extend(f);
        let name = format!("{ENV_PREFIX}{}", key.to_uppercase());
        origins.insert(key, Origin::Env(name));
    }
    let mut out: Vec<OsString> = argv.get(..=at).unwrap_or_default().to_vec();
    out.extend(inserted.into_iter().map(OsString::from));
    out.extend(rest.iter().cloned());
    Ok((out, origins))
}

/// The environment as (name, value) pairs, the `ACCESSD_*` ones only.
pub(crate) fn accessd_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(n, _)| n.starts_with(ENV_PREFIX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Command {
        Command::new("accessd").subcommand(
            Command::new("serve")
                .args_override_self(true)
                .arg(
                    Arg::new("listen")
                        .long("listen")
                        .value_parser(clap::value_parser!(std::net::SocketAddr)),
                )
                .arg(
                    Arg::new("max_connections")
                        .long("max-connections")
                        .value_parser(clap::value_parser!(usize)),
                )
                .arg(
                    Arg::new("verbose")
                        .long("verbose")
                        .action(ArgAction::SetTrue),
                )
                .arg(Arg::new("config").long("config")),
        )
    }

    fn file(text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "accessd-config-{}-{}.toml",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn file_then_environment_then_flags() {
        let path = file("listen = \"127.0.0.1:1\"\nmax_connections = 7\nverbose = true\n");
        let p = path.to_str().unwrap();
        let env = vec![("ACCESSD_LISTEN".to_owned(), "127.0.0.1:2".to_owned())];
        let (out, origins) = expand_args(
            args(&["accessd", "serve", "--config", p, "--max-connections", "9"]),
            cli(),
            &env,
        )
        .unwrap();
        let m = cli().try_get_matches_from(&out).unwrap();
        let (_, serve) = m.subcommand().unwrap();
        assert_eq!(
            serve
                .get_one::<std::net::SocketAddr>("listen")
                .unwrap()
                .port(),
            2,
            "{out:?}"
        );
        assert_eq!(*serve.get_one::<usize>("max_connections").unwrap(), 9);
        assert!(serve.get_flag("verbose"));
        assert_eq!(origins["listen"], Origin::Env("ACCESSD_LISTEN".into()));
        assert_eq!(origins["max_connections"], Origin::File);
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let path = file(
            "listen = \"nowhere\"\nmax_connections = \"many\"\ncolour = 1\nverbose = \"yes\"\nconfig = \"x\"\nlisten_all = [1]\n",
        );
        let p = path.to_str().unwrap();
        let env = vec![("ACCESSD_MAX_CONNECTIONS".to_owned(), "-1".to_owned())];
        let e = expand_args(args(&["accessd", "serve", "--config", p]), cli(), &env)
            .unwrap_err()
            .to_string();
        for needle in [
            "key `listen`: invalid value 'nowhere'",
            "key `colour`: unknown setting",
            "key `verbose`: must be true or false",
            "key `config`: unknown setting (a config file cannot name another)",
            "key `listen_all`: unknown setting",
            "ACCESSD_MAX_CONNECTIONS: invalid value '-1'",
        ] {
            assert!(e.contains(needle), "{needle} not in:\n{e}");
        }
        // The environment overrides max_connections: its file value is
        // still checked.
        assert!(e.contains("key `max_connections`"), "{e}");
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn other_commands_and_bad_toml() {
        let env = vec![("ACCESSD_LISTEN".to_owned(), "127.0.0.1:2".to_owned())];
        let same = args(&["accessd", "decide", "--config", "x"]);
        assert_eq!(expand_args(same.clone(), cli(), &env).unwrap().0, same);
        // `serve` as a value, not the command.
        let same = args(&["accessd", "decide", "--site", "serve"]);
        assert_eq!(expand_args(same.clone(), cli(), &env).unwrap().0, same);
        // After a global option with its value, serve is found.
        let global = Command::new("accessd")
            .arg(Arg::new("log_format").long("log-format").global(true))
            .subcommand(cli().find_subcommand("serve").unwrap().clone());
        let (out, _) = expand_args(
            args(&["accessd", "--log-format", "json", "serve"]),
            global,
            &env,
        )
        .unwrap();
        assert_eq!(
            out,
            args(&[
                "accessd",
                "--log-format",
                "json",
                "serve",
                "--listen=127.0.0.1:2"
            ])
        );
        let path = file("listen = \n");
        let e = expand_args(
            args(&["accessd", "serve", &format!("--config={}", path.display())]),
            cli(),
            &[],
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("not valid TOML"), "{e:#}");
        std::fs::remove_file(path).ok();
    }
}
