//! Live changes without dropping a connection: on SIGHUP, on `POST
//! /v1/reload` (loopback only) and when the served site file changes,
//! `serve` reloads
//!
//! - the TLS files (CA, certificate, key): new handshakes use them, QUIC
//!   connections already open keep going on theirs;
//! - the site file it serves, checked whole first: a file that does not
//!   read or check keeps the old site serving and says why (log, metric,
//!   the reload's answer).
//!
//! Other settings (addresses, limits, the source) need a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use accessd_protocol::Limits;
use serde::Serialize;
use tokio::sync::watch;

use crate::cmd::serve::TlsArgs;
use crate::cmd::site::{ServedSite, SiteReload};

/// What one part of a reload did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// Loaded and in use; a new site's snapshot version.
    Reloaded {
        /// The version of the new snapshot (site only).
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
    /// Nothing changed.
    Unchanged,
    /// Refused: the old one keeps serving.
    Refused {
        /// Why, every problem.
        error: String,
    },
}

impl Outcome {
    fn name(&self) -> &'static str {
        match self {
            Outcome::Reloaded { .. } => "reloaded",
            Outcome::Unchanged => "unchanged",
            Outcome::Refused { .. } => "refused",
        }
    }
}

/// What a reload did.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Report {
    /// The TLS files.
    pub(crate) tls: Outcome,
    /// The site file, when one is served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) site: Option<Outcome>,
}

/// What can be reloaded, and how.
pub(crate) struct Reloader {
    tls: TlsArgs,
    limits: Limits,
    endpoint: accessd_protocol::Endpoints,
    site: Option<(PathBuf, ServedSite)>,
    /// One reload at a time (SIGHUP, HTTP and the watcher may race).
    busy: std::sync::Mutex<()>,
}

impl Reloader {
    pub(crate) fn new(
        tls: TlsArgs,
        limits: Limits,
        endpoint: accessd_protocol::Endpoints,
        site: Option<(PathBuf, ServedSite)>,
    ) -> Self {
        Self {
            tls,
            limits,
            endpoint,
            site,
            busy: std::sync::Mutex::new(()),
        }
    }

    /// Reloads the TLS files and the site file. Blocking (reads files,
    /// parses the site).
    pub(crate) fn reload(&self, why: &str) -> Report {
        let _one = self.busy.lock();
        tracing::info!(why, "reloading");
        let report = Report {
            tls: self.reload_tls(),
            site: self.reload_site_locked(),
        };
        note("tls", &report.tls);
        if let Some(site) = &report.site {
            note("site", site);
        }
        report
    }

    /// Reloads the site file only (the watcher saw it change).
    fn reload_site(&self) -> Option<Outcome> {
        let _one = self.busy.lock();
        let outcome = self.reload_site_locked()?;
        note("site", &outcome);
        Some(outcome)
    }

    fn reload_tls(&self) -> Outcome {
        let config = self.tls.load().and_then(|tls| {
            accessd_protocol::server_config(&tls, &self.limits)
                .map_err(|e| anyhow::anyhow!(e).context("cannot use the TLS files"))
        });
        match config {
            Ok(config) => {
                self.endpoint.set_server_config(Some(config));
                Outcome::Reloaded { version: None }
            }
            Err(e) => Outcome::Refused {
                error: format!("{e:#}"),
            },
        }
    }

    fn reload_site_locked(&self) -> Option<Outcome> {
        let (path, site) = self.site.as_ref()?;
        Some(match site.reload(path) {
            SiteReload::Unchanged => Outcome::Unchanged,
            SiteReload::Reloaded(version) => Outcome::Reloaded {
                version: Some(version),
            },
            SiteReload::Refused(error) => Outcome::Refused { error },
        })
    }
}

/// Logs and counts one outcome.
fn note(what: &'static str, outcome: &Outcome) {
    metrics::counter!(crate::telemetry::RELOADS, "what" => what, "result" => outcome.name())
        .increment(1);
    match outcome {
        Outcome::Reloaded {
            version: Some(version),
        } => tracing::info!(what, version, "reloaded"),
        Outcome::Reloaded { version: None } => tracing::info!(what, "reloaded"),
        Outcome::Unchanged => tracing::debug!(what, "unchanged"),
        Outcome::Refused { error } => {
            tracing::error!(what, %error, "reload refused; the old one keeps serving")
        }
    }
}

/// The site file's modification time and length, to notice a change
/// without reading it.
fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reloads on SIGHUP, and the site file when its modification time or
/// length changes (looked at every `every`), until `stop` turns true.
/// SIGHUP is taken over at once (before the future first runs), so from
/// here on it reloads instead of ending the process.
pub(crate) fn start(
    reloader: Arc<Reloader>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let mut hup = crate::cmd::serve::take_over_signal(
        tokio::signal::unix::SignalKind::hangup(),
        "no SIGHUP reloads",
    );
    async move {
        let site = reloader.site.as_ref().map(|(path, _)| path.clone());
        let mut seen = site.as_deref().and_then(stamp);
        // Whether the file on disk is what is served: then each look at
        // an unchanged file confirms the served data as current (its age,
        // as answers and the staleness policy see it). A refused edit or a
        // vanished file stops confirming: the truth moved on without us.
        let mut in_sync = seen.is_some();
        let mut tick = tokio::time::interval(every);
        loop {
            #[cfg(unix)]
            let hangup = crate::cmd::serve::next_signal(hup.as_mut());
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            tokio::select! {
                () = async { let _ = stop.wait_for(|s| *s).await; } => return,
                _ = hangup => {
                    let r = Arc::clone(&reloader);
                    let report = tokio::task::spawn_blocking(move || r.reload("SIGHUP")).await;
                    seen = site.as_deref().and_then(stamp);
                    if let Ok(Report { site: Some(outcome), .. }) = report {
                        in_sync = seen.is_some() && !matches!(outcome, Outcome::Refused { .. });
                    }
                }
                _ = tick.tick() => {
                    let Some(path) = &site else { continue };
                    let now = stamp(path);
                    if now != seen {
                        seen = now;
                        let r = Arc::clone(&reloader);
                        let outcome = tokio::task::spawn_blocking(move || r.reload_site()).await;
                        in_sync = seen.is_some()
                            && !matches!(outcome, Ok(Some(Outcome::Refused { .. })) | Err(_));
                    } else if in_sync && now.is_some()
                        && let Some((_, served)) = &reloader.site
                    {
                        served.shared.confirm(jiff::Timestamp::now());
                    }
                }
            }
        }
    }
}
