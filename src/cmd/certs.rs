//! `accessd certs`: a development CA, a server certificate, reader
//! certificates and a gateway certificate, for trying accessd out.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use accessd_protocol::{DevCa, IssuedCert, SAN_ALL_READERS, SAN_READER};
use anyhow::Context;

/// Arguments of `accessd certs`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Directory to write the PEM files to (created if missing).
    #[arg(long, default_value = "certs")]
    out: PathBuf,
    /// Names the server certificate is valid for (DNS names or IPs).
    #[arg(long = "server-name", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
    server_names: Vec<String>,
    /// Reader ids to issue a reader certificate for (repeatable). Each may
    /// only ask for its own reader.
    #[arg(long = "reader")]
    readers: Vec<String>,
}

fn write(dir: &Path, name: &str, issued: &IssuedCert) -> anyhow::Result<()> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &issued.cert_pem)
        .with_context(|| format!("cannot write `{}`", cert.display()))?;
    std::fs::write(&key, &issued.key_pem)
        .with_context(|| format!("cannot write `{}`", key.display()))?;
    restrict(&key)?;
    println!("  {}  {}", cert.display(), key.display());
    Ok(())
}

#[cfg(unix)]
fn restrict(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict `{}`", path.display()))
}

#[cfg(not(unix))]
fn restrict(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create `{}`", args.out.display()))?;
    let ca = DevCa::new("accessd development CA")?;
    let ca_path = args.out.join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem())
        .with_context(|| format!("cannot write `{}`", ca_path.display()))?;
    println!("development CA (its key is not kept: issue a new set to add readers)");
    println!("  {}", ca_path.display());
    let names: Vec<&str> = args.server_names.iter().map(String::as_str).collect();
    println!("server ({})", names.join(", "));
    write(&args.out, "server", &ca.server(&names)?)?;
    println!("gateway (may ask for every reader: {SAN_ALL_READERS})");
    write(
        &args.out,
        "gateway",
        &ca.client("accessd gateway", &[SAN_ALL_READERS.to_owned()])?,
    )?;
    for reader in &args.readers {
        println!("reader {reader}");
        let safe: String = reader
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        write(
            &args.out,
            &format!("reader-{safe}"),
            &ca.client(
                &format!("reader {reader}"),
                &[format!("{SAN_READER}{reader}")],
            )?,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
