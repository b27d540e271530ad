//! The load generator's engine: connections × pipelined streams, closed
//! loop (keep `in_flight` frames outstanding) or open loop (send on a fixed
//! schedule and measure from the intended send time, so a stalled server
//! cannot hide its stall: no coordinated omission).
//!
//! It drives any server that answers each frame with one frame in order,
//! so the same code measures accessd and the bare echo floor in
//! `benches/`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use accessd_engine::{CredentialKey, Verdict};
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::client::{ClientError, Pipeline, connect_quic};
use crate::frame::{Frame, MAX_BATCH, RequestFrame};
use crate::tls::TlsCredentials;

/// One request of the mix, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MixRequest {
    /// The reader id.
    pub reader: String,
    /// The credential.
    pub credential: CredentialKey,
    /// PIN digits, if any.
    pub pin: Option<Vec<u8>>,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Server address.
    pub addr: SocketAddr,
    /// Name in the server certificate.
    pub server_name: String,
    /// Connections (each with its own UDP socket, as separate readers have).
    pub connections: usize,
    /// Frames outstanding per connection (closed loop), or the cap on them
    /// (open loop).
    pub in_flight: usize,
    /// Requests per frame: 1 sends request frames, more sends batch frames.
    pub batch: usize,
    /// How long to send for.
    pub duration: Duration,
    /// Open loop: total frames per second across all connections. `None`:
    /// closed loop.
    pub rate: Option<f64>,
}

/// Counters shared with a progress display while the load runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Frames answered so far.
    pub frames: AtomicU64,
    /// Decisions answered so far.
    pub decisions: AtomicU64,
    /// Errors so far.
    pub errors: AtomicU64,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Frames answered (requests when `batch` is 1).
    pub frames: u64,
    /// Decisions answered (frames × batch size).
    pub decisions: u64,
    /// Grants among them.
    pub grants: u64,
    /// Denies among them.
    pub denies: u64,
    /// Error frames, failed connections, frames left unanswered.
    pub errors: u64,
    /// Time from the first send to the last answer.
    pub elapsed: Duration,
    /// Round-trip latency per frame, in nanoseconds.
    pub latency_ns: Histogram<u64>,
    /// The first error seen, for the summary.
    pub first_error: Option<String>,
}

impl LoadReport {
    /// Frames per second.
    pub fn frames_per_sec(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Decisions per second.
    pub fn decisions_per_sec(&self) -> f64 {
        self.decisions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency quantile, in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.latency_ns.value_at_quantile(q) as f64 / 1000.0
    }

    /// The largest latency, in microseconds.
    pub fn max_us(&self) -> f64 {
        self.latency_ns.max() as f64 / 1000.0
    }
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A parameter is out of range.
    #[error("bad load parameter: {0}")]
    Spec(String),
    /// No connection could be made.
    #[error(transparent)]
    Client(#[from] ClientError),
}

#[expect(clippy::expect_used, reason = "constant, valid bounds")]
fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 60 s at 3 significant digits (values above are clamped).
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Connects every connection, then runs the load and returns what it
/// measured. Stops by itself after `spec.duration` plus a short drain.
pub async fn run(
    spec: &LoadSpec,
    tls: &TlsCredentials,
    mix: Arc<Vec<MixRequest>>,
    progress: Arc<Progress>,
) -> Result<LoadReport, LoadError> {
    if spec.connections == 0 || spec.in_flight == 0 {
        return Err(LoadError::Spec(
            "connections and in-flight must be at least 1".into(),
        ));
    }
    if spec.batch == 0 || spec.batch > MAX_BATCH {
        return Err(LoadError::Spec(format!("batch must be 1 to {MAX_BATCH}")));
    }
    if mix.is_empty() {
        return Err(LoadError::Spec("the request mix is empty".into()));
    }
    if let Some(rate) = spec.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(LoadError::Spec("rate must be a positive number".into()));
    }
    let mut pipes = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        let conn = connect_quic(spec.addr, &spec.server_name, tls).await?;
        let (send, recv) = conn.open_bi().await.map_err(ClientError::from)?;
        pipes.push((conn, Pipeline::new(send, recv)));
    }
    let start = Instant::now();
    let stop_at = start + spec.duration;
    let stopped = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (conn, pipe)) in pipes.into_iter().enumerate() {
        let spec = spec.clone();
        let mix = mix.clone();
        let progress = progress.clone();
        let stopped = stopped.clone();
        tasks.spawn(async move {
            let r = drive(i, pipe, &spec, &mix, &progress, stop_at, &stopped).await;
            conn.close(0u32.into(), b"load done");
            r
        });
    }
    let mut total = ConnReport::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(r) => total.merge(r),
            Err(e) => {
                total.errors += 1;
                total.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(LoadReport {
        frames: total.frames,
        decisions: total.decisions,
        grants: total.grants,
        denies: total.denies,
        errors: total.errors,
        elapsed: total
            .last
            .unwrap_or_else(Instant::now)
            .duration_since(start),
        latency_ns: total.hist,
        first_error: total.first_error,
    })
}

struct ConnReport {
    frames: u64,
    decisions: u64,
    grants: u64,
    denies: u64,
    errors: u64,
    hist: Histogram<u64>,
    last: Option<Instant>,
    first_error: Option<String>,
}

impl ConnReport {
    fn new() -> Self {
        Self {
            frames: 0,
            decisions: 0,
            grants: 0,
            denies: 0,
            errors: 0,
            hist: new_histogram(),
            last: None,
            first_error: None,
        }
    }

    fn merge(&mut self, o: ConnReport) {
        self.frames += o.frames;
        self.decisions += o.decisions;
        self.grants += o.grants;
        self.denies += o.denies;
        self.errors += o.errors;
        let _ = self.hist.add(&o.hist);
        self.last = self.last.max(o.last);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// One connection's loop.
async fn drive(
    index: usize,
    mut pipe: Pipeline,
    spec: &LoadSpec,
    mix: &[MixRequest],
    progress: &Progress,
    stop_at: Instant,
    stopped: &AtomicBool,
) -> ConnReport {
    let mut report = ConnReport::new();
    // Spread the connections over the mix so they do not ask in lockstep.
    let mut cursor = index.wrapping_mul(7919) % mix.len();
    let mut next_id: u32 = 1;
    // Send times of outstanding frames, in order (answers come in order).
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(spec.in_flight);
    let interval = spec
        .rate
        .map(|r| Duration::from_secs_f64(spec.connections as f64 / r));
    let mut next_due = Instant::now();
    let mut items: Vec<RequestFrame<'_>> = Vec::with_capacity(spec.batch);
    let mut sending = true;
    loop {
        let now = Instant::now();
        if sending && now >= stop_at {
            sending = false;
            stopped.store(true, Ordering::Relaxed);
        }
        if sending {
            // Queue what is due: in closed loop, up to `in_flight`
            // outstanding; in open loop, every frame whose time has come
            // (capped at `in_flight`; the latency still counts from the
            // intended time).
            while sent.len() < spec.in_flight {
                let intended = match interval {
                    None => now,
                    Some(iv) => {
                        if next_due > now {
                            break;
                        }
                        let t = next_due;
                        next_due += iv;
                        t
                    }
                };
                items.clear();
                for _ in 0..spec.batch {
                    let Some(m) = mix.get(cursor) else { break };
                    cursor = (cursor + 1) % mix.len();
                    next_id = next_id.wrapping_add(1).max(1);
                    items.push(RequestFrame {
                        request_id: next_id,
                        reader: &m.reader,
                        credential: m.credential,
                        pin: m.pin.as_deref(),
                        reader_time_ms: None,
                    });
                }
                let queued = if spec.batch == 1 {
                    items.first().map(|r| pipe.queue(r))
                } else {
                    Some(pipe.queue_batch(&items))
                };
                match queued {
                    Some(Ok(())) => sent.push_back(intended),
                    Some(Err(e)) => report.error(e),
                    None => break,
                }
            }
            if let Err(e) = pipe.flush().await {
                report.error(e);
                return report;
            }
        }
        if sent.is_empty() {
            if !sending {
                break;
            }
            if let Some(iv) = interval {
                // Nothing outstanding: sleep until the next send is due.
                tokio::time::sleep_until(next_due.min(stop_at)).await;
                let _ = iv;
                continue;
            }
        }
        let read = match (interval, sending) {
            (Some(_), true) => {
                tokio::select! {
                    r = pipe.read(|f| on_frame(f, &mut sent, &mut report, progress)) => Some(r),
                    () = tokio::time::sleep_until(next_due.min(stop_at)) => None,
                }
            }
            (_, false) => {
                // Draining: answers should all be in well within a second.
                match tokio::time::timeout_at(
                    stop_at + Duration::from_secs(2),
                    pipe.read(|f| on_frame(f, &mut sent, &mut report, progress)),
                )
                .await
                {
                    Ok(r) => Some(r),
                    Err(_) => {
                        report.error(format!("{} frame(s) unanswered at the end", sent.len()));
                        report.errors += sent.len().saturating_sub(1) as u64;
                        break;
                    }
                }
            }
            (None, true) => Some(
                pipe.read(|f| on_frame(f, &mut sent, &mut report, progress))
                    .await,
            ),
        };
        match read {
            None | Some(Ok(true)) => {}
            Some(Ok(false)) => {
                if !sent.is_empty() {
                    report.error("server finished the stream with frames unanswered");
                }
                break;
            }
            Some(Err(e)) => {
                report.error(e);
                progress.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    pipe.finish();
    report
}

fn on_frame(
    frame: Frame<'_>,
    sent: &mut VecDeque<Instant>,
    report: &mut ConnReport,
    progress: &Progress,
) {
    let now = Instant::now();
    let Some(t0) = sent.pop_front() else {
        report.error(format!("unsolicited {:?} frame", frame.frame_type()));
        return;
    };
    let ns = now.duration_since(t0).as_nanos().min(u128::from(u64::MAX)) as u64;
    report.hist.saturating_record(ns.max(1));
    report.last = Some(now);
    let decisions = match frame {
        Frame::Response(r) => {
            tally(r.verdict, report);
            1
        }
        Frame::BatchResponse(b) => {
            for r in b.iter() {
                tally(r.verdict, report);
            }
            b.len() as u64
        }
        // The echo floor answers with the request itself.
        Frame::Request(_) => 1,
        Frame::BatchRequest(b) => b.len() as u64,
        Frame::Error(e) => {
            report.error(format!("server error {}: {}", e.code, e.text));
            progress.errors.fetch_add(1, Ordering::Relaxed);
            0
        }
        Frame::Ping(_) | Frame::Pong(_) => 0,
    };
    report.frames += 1;
    report.decisions += decisions;
    progress.frames.fetch_add(1, Ordering::Relaxed);
    progress.decisions.fetch_add(decisions, Ordering::Relaxed);
}

fn tally(verdict: Verdict, report: &mut ConnReport) {
    match verdict {
        Verdict::Grant => report.grants += 1,
        Verdict::Deny => report.denies += 1,
    }
}
