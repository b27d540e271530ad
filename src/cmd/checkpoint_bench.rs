//! `accessd bench-checkpoint`: checkpoint size and write time, verify and
//! restore time, and a cold start of `accessd serve` from the checkpoint
//! (process start included) to its first answered decision, with the
//! server's resident memory; then the peak memory of a bootstrap against
//! the in-memory fake table. Figures go to docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use accessd_engine::synth::{SynthParams, site};
use accessd_engine::{Change, Request, SiteFile, SnapshotBuilder};
use accessd_loader::checkpoint::{self, Checkpoint, CheckpointData, CheckpointSource};
use accessd_loader::fake::FakeBackend;
use accessd_loader::{Loader, LoaderConfig, Source, item};
use accessd_protocol::{Client, TlsCredentials};
use anyhow::Context;
use jiff::Timestamp;

/// Arguments of `accessd bench-checkpoint`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Cardholders in the synthetic site (each with ~1.05 credentials).
    #[arg(long, default_value_t = 1_000_000)]
    holders: usize,
    /// Where to write the checkpoint and certificates.
    #[arg(long, default_value = "target/bench-checkpoint")]
    dir: PathBuf,
    /// Also measure a bootstrap against the in-memory fake table.
    #[arg(long)]
    bootstrap: bool,
    /// Also write the site as a site file and measure `check-site` and
    /// `serve --site` on it, without and with a checkpoint.
    #[arg(long)]
    site_file: bool,
}

/// Resident memory now and at its peak, in MiB, from /proc.
fn rss_mib(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak resident memory of this process (Linux).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create `{}`", args.dir.display()))?;
    let params = SynthParams {
        holders: args.holders,
        doors: 2000,
        levels: 300,
        pin_every: 0,
        now: Timestamp::now(),
        ..SynthParams::default()
    };
    let records = site(&params);
    let site_text = if args.site_file {
        Some(SiteFile::to_toml(&records)?)
    } else {
        None
    };
    let mut builder = SnapshotBuilder::new();
    let refused = builder.apply_all(records.into_iter().map(Change::Upsert));
    anyhow::ensure!(refused.is_empty(), "synthetic records refused");
    let snapshot = builder.publish(Timestamp::now());
    let credentials = snapshot.stats().credentials;
    let card = snapshot.credential_keys().next().context("no credential")?;
    let reader = snapshot
        .reader_ids()
        .next()
        .context("no reader")?
        .to_owned();
    drop(snapshot);
    println!("site: {} holders, {credentials} credentials", args.holders);

    // What the follower waits for before a checkpoint is written from a
    // thread of its own: a copy of the builder sharing every entry.
    let started = Instant::now();
    let copy = builder.clone();
    let clone_ms = started.elapsed().as_secs_f64() * 1000.0;
    drop(copy);
    println!("builder copy for a background write: {clone_ms:.1} ms");

    let path = args.dir.join("state.ckpt");
    let table = "bench-offline";
    let started = Instant::now();
    let bytes = checkpoint::write(
        &path,
        &CheckpointData {
            source: CheckpointSource::Table {
                table: table.to_owned(),
            },
            builder: &builder,
            fresh_as_of: Timestamp::now(),
            cursor: None,
            presence: Vec::new(),
            now: Timestamp::now(),
        },
    )?;
    let write_s = started.elapsed().as_secs_f64();
    drop(builder);
    println!(
        "checkpoint: {:.1} MiB ({:.0} B/credential), encoded and written (fsync) in {:.0} ms",
        bytes as f64 / 1048576.0,
        bytes as f64 / credentials as f64,
        write_s * 1000.0
    );

    let started = Instant::now();
    let opened = Checkpoint::open(&path)?;
    let open_ms = started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    let mut restored = opened.restore()?;
    let restore_ms = started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    let again = restored.builder.publish(Timestamp::now());
    let publish_ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        again.stats().credentials == credentials,
        "restore lost credentials"
    );
    println!(
        "in process: open + verify {open_ms:.0} ms, restore records {restore_ms:.0} ms, publish {publish_ms:.0} ms"
    );
    drop((again, restored, opened));

    let runtime = super::dynamodb::runtime()?;
    runtime.block_on(cold_start(&args.dir, &path, table, &reader, card))?;
    if let Some(text) = site_text {
        runtime.block_on(site_file(&args.dir, text, &reader, card))?;
    }
    if args.bootstrap {
        runtime.block_on(bootstrap(&params))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts `accessd serve` with `extra` arguments (the data source) on a
/// free loopback port, logging JSON at `info` to a pipe; returns it with
/// its address and a gateway's TLS credentials.
fn spawn_serve(
    dir: &Path,
    extra: &[&std::ffi::OsStr],
) -> anyhow::Result<(std::process::Child, std::net::SocketAddr, TlsCredentials)> {
    let exe = std::env::current_exe()?;
    if !dir.join("ca.pem").exists() {
        let status = Command::new(&exe)
            .args(["certs", "--out"])
            .arg(dir)
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "accessd certs failed");
    }
    let tls = TlsCredentials::from_pem_files(
        &dir.join("ca.pem"),
        &dir.join("gateway.pem"),
        &dir.join("gateway.key"),
    )?;
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let child = Command::new(&exe)
        .args(["--log-format", "json", "serve"])
        .args(extra)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--ca")
        .arg(dir.join("ca.pem"))
        .arg("--cert")
        .arg(dir.join("server.pem"))
        .arg("--key")
        .arg(dir.join("server.key"))
        .args(["--http-addr", "off"])
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    Ok((child, addr, tls))
}

/// Reads the child's log on a thread (so the pipe never fills); sends the
/// time since `started` of each line containing `needle`.
fn watch_log(
    child: &mut std::process::Child,
    needle: &'static str,
    started: Instant,
) -> std::sync::mpsc::Receiver<Duration> {
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains(needle) {
                    let _ = tx.send(started.elapsed());
                }
            }
        });
    }
    rx
}

/// Asks `addr` until it answers with data (a version above 0); the time
/// since `started` and the answer.
async fn first_decision(
    child: &mut std::process::Child,
    addr: std::net::SocketAddr,
    tls: &TlsCredentials,
    reader: &str,
    card: accessd_engine::CredentialKey,
    started: Instant,
) -> anyhow::Result<(Duration, accessd_protocol::ResponseFrame)> {
    let request = Request {
        reader,
        credential: card,
        pin: None,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        anyhow::ensure!(Instant::now() < deadline, "no answer within 120 s");
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("serve exited: {status}");
        }
        // A handshake on loopback takes a few ms; an Initial sent before
        // the server's socket exists is lost, and waiting for quinn to
        // resend it would measure its retransmit timer, not the server.
        let attempt = tokio::time::timeout(Duration::from_millis(25), async {
            let client = Client::connect(addr, "localhost", tls).await.ok()?;
            client.decide(&request).await.ok()
        })
        .await;
        if let Ok(Some(answer)) = attempt
            && answer.snapshot_version > 0
        {
            return Ok((started.elapsed(), answer));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Starts `accessd serve` offline (its DynamoDB endpoint refuses
/// connections) from the checkpoint and times the first answered decision,
/// then the rebuild that replaces the warm snapshot.
async fn cold_start(
    dir: &Path,
    path: &Path,
    table: &str,
    reader: &str,
    card: accessd_engine::CredentialKey,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (mut child, addr, tls) = spawn_serve(
        dir,
        &[
            "--dynamodb-table".as_ref(),
            table.as_ref(),
            "--region".as_ref(),
            "us-east-1".as_ref(),
            "--endpoint-url".as_ref(),
            "http://127.0.0.1:9".as_ref(),
            "--checkpoint".as_ref(),
            path.as_os_str(),
        ],
    )?;
    let pid = child.id().to_string();
    // The server's log says when the checkpoint is rebuilt in memory (the
    // warm snapshot replaced by the builder's).
    let rebuilt_rx = watch_log(&mut child, "checkpoint rebuilt in memory", started);
    let first = first_decision(&mut child, addr, &tls, reader, card, started).await?;
    let (rss, peak) = rss_mib(&pid);
    println!(
        "cold start (process start to first decision, offline, from the checkpoint): {:.1} ms; \
         server resident then {rss:.0} MiB (version {}, reason {})",
        first.0.as_secs_f64() * 1000.0,
        first.1.snapshot_version,
        first.1.reason
    );
    let rebuilt = rebuilt_rx.recv_timeout(Duration::from_secs(120));
    let (rss, peak_after) = rss_mib(&pid);
    let client = Client::connect(addr, "localhost", &tls).await?;
    let request = Request {
        reader,
        credential: card,
        pin: None,
    };
    let again = client.decide(&request).await?;
    let _ = child.kill();
    let _ = child.wait();
    anyhow::ensure!(
        again.reason == first.1.reason && again.snapshot_version == first.1.snapshot_version,
        "the rebuilt snapshot answers otherwise: {again:?}"
    );
    match rebuilt {
        Ok(at) => println!(
            "rebuilt in memory (warm snapshot replaced) {:.2} s after the spawn; \
             server resident {rss:.0} MiB, peak {:.0} MiB",
            at.as_secs_f64(),
            peak.max(peak_after)
        ),
        Err(_) => anyhow::bail!("the server never logged its rebuild"),
    }
    Ok(())
}

/// Runs `accessd ARGS` to its end; its wall time and peak resident MiB
/// (from `wait4`'s resource usage, exact however short the peak).
fn run_measured(args: &[&std::ffi::OsStr]) -> anyhow::Result<(Duration, f64)> {
    let started = Instant::now();
    let child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 writes it.
    #[expect(unsafe_code, reason = "wait4: the child's peak memory")]
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let pid = libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage);
        anyhow::ensure!(pid > 0, "wait4 failed");
        usage
    };
    anyhow::ensure!(status == 0, "`accessd {args:?}` failed: status {status}");
    Ok((started.elapsed(), usage.ru_maxrss as f64 / 1024.0))
}

/// A site file of the same site: `check-site`, then `serve --site` from
/// the file (first decision, resident memory once loaded), then twice
/// with a checkpoint (the first run writes it at its clean stop, the
/// second starts from it).
async fn site_file(
    dir: &Path,
    text: String,
    reader: &str,
    card: accessd_engine::CredentialKey,
) -> anyhow::Result<()> {
    let path = dir.join("site.toml");
    std::fs::write(&path, &text)?;
    let file_mib = text.len() as f64 / 1048576.0;
    drop(text);
    let (took, peak) = run_measured(&["check-site".as_ref(), "--site".as_ref(), path.as_os_str()])?;
    println!(
        "site file: {file_mib:.1} MiB; check-site {:.2} s, peak resident {peak:.0} MiB",
        took.as_secs_f64()
    );
    let ckpt = dir.join("site.ckpt");
    let _ = std::fs::remove_file(&ckpt);
    let site_arg = ["--site".as_ref(), path.as_os_str()];
    let with_ckpt = [
        "--site".as_ref(),
        path.as_os_str(),
        "--checkpoint".as_ref(),
        ckpt.as_os_str(),
    ];
    for (what, extra, graceful) in [
        ("serve --site", &site_arg[..], false),
        ("serve --site --checkpoint (none yet)", &with_ckpt[..], true),
        ("serve --site --checkpoint (from it)", &with_ckpt[..], false),
    ] {
        let started = Instant::now();
        let (mut child, addr, tls) = spawn_serve(dir, extra)?;
        let pid = child.id().to_string();
        let _log = watch_log(&mut child, "\u{0}", started);
        let (first, answer) = first_decision(&mut child, addr, &tls, reader, card, started).await?;
        // Resident memory once loaded: a moment after the first decision,
        // when a rebuild or the parse's freed memory has settled.
        tokio::time::sleep(Duration::from_secs(if graceful { 1 } else { 5 })).await;
        let (rss, peak) = rss_mib(&pid);
        if graceful {
            // SIGTERM: the clean stop writes the checkpoint.
            // SAFETY: signalling our own child.
            #[expect(unsafe_code, reason = "SIGTERM to our own child")]
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let status = child.wait()?;
            anyhow::ensure!(status.success(), "serve did not stop cleanly: {status}");
            anyhow::ensure!(ckpt.exists(), "no checkpoint written at the stop");
        } else {
            let _ = child.kill();
            let _ = child.wait();
        }
        println!(
            "{what}: first decision {:.0} ms after the spawn (reason {}); resident {rss:.0} MiB 5 s later, peak {peak:.0} MiB",
            first.as_secs_f64() * 1000.0,
            answer.reason
        );
    }
    Ok(())
}

/// A bootstrap against the fake table: the table is filled first, then the
/// peak is reset, so the peak measured is the bootstrap's own (scan pages
/// in flight plus the snapshot being built).
async fn bootstrap(params: &SynthParams) -> anyhow::Result<()> {
    let fake = Arc::new(FakeBackend::with_pages(1000, 4000));
    let items: Result<Vec<_>, _> = site(params).iter().map(item::item_of).collect();
    fake.load(items?);
    let (before, _) = rss_mib("self");
    reset_peak();
    let started = Instant::now();
    let source = Source::start(
        Loader::new(Arc::clone(&fake), LoaderConfig::default()),
        None,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let (after, peak) = rss_mib("self");
    println!(
        "bootstrap from the fake table: {seconds:.2} s; resident {before:.0} MiB with the table loaded, \
         {after:.0} MiB after, peak {peak:.0} MiB: the bootstrap added {:.0} MiB at its peak, {:.0} MiB kept",
        peak - before,
        after - before
    );
    source.shutdown().await;
    Ok(())
}
