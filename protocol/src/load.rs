//! The load generator's engine: connections × pipelined streams, closed
//! loop (keep `in_flight` frames outstanding) or open loop (each
//! connection sends at random, Poisson-distributed times at its share of
//! the rate, as independent readers do, and latency is measured from the
//! intended send time, so a stalled server cannot hide its stall: no
//! coordinated omission).
//!
//! Open loop keeps three measures apart: the latency a reader would see
//! (from the intended time), the round trip (from the actual send), and
//! the generator's own schedule lag (how late it sent frames that nothing
//! held back). Tokio's timers tick in milliseconds; open-loop sends are
//! woken to within microseconds by one spinning task (`pacer`) instead.
//! When the generator could not send what was offered,
//! [`LoadReport::generator_behind`] says so.
//!
//! It drives any server that answers each frame with one frame in order,
//! so the same code measures accessd and the bare echo floor in
//! `benches/`.

mod pacer;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use accessd_engine::{CredentialKey, Verdict};
use hdrhistogram::Histogram;
use tokio::time::Instant;

use self::pacer::Pacer;
use crate::client::{ClientError, Pipeline, client_config, client_endpoint, connect_on};
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
    /// Client UDP sockets the connections share, round robin; `None`: one
    /// socket per connection, as separate readers have. Thousands of
    /// connections from one process need fewer (file descriptors, and one
    /// quinn driver per socket).
    pub sockets: Option<usize>,
    /// Handshakes started per second while connecting; `None`: as fast as
    /// the server completes them, [`MAX_CONCURRENT_HANDSHAKES`] at a time.
    pub handshake_rate: Option<f64>,
}

/// Handshakes in progress at once while connecting.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 64;

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
    /// Latency per frame in nanoseconds, from the time it was meant to be
    /// sent (open loop) or was sent (closed loop) to its answer: what a
    /// reader would see, a server's stall included.
    pub latency_ns: Histogram<u64>,
    /// From each frame's actual send to its answer, in nanoseconds.
    pub round_trip_ns: Histogram<u64>,
    /// Open loop: how late the generator sent the frames nothing held back
    /// (its own lag: timers, a busy core), in nanoseconds.
    pub lag_ns: Histogram<u64>,
    /// Open loop: frames due within the window (the offered load); closed
    /// loop: frames sent.
    pub offered: u64,
    /// Frames sent.
    pub sent: u64,
    /// Open loop: frames that waited because their connection already had
    /// `in_flight` frames unanswered (the server's answers were slow;
    /// their latency counts the wait).
    pub held_back: u64,
    /// Time to connect every connection (handshakes, before the window).
    pub connect_elapsed: Duration,
    /// Each handshake's time, in nanoseconds.
    pub handshake_ns: Histogram<u64>,
    /// The client's resident memory per connection once connected, in
    /// bytes (from `/proc/self/status`; `None` where it cannot be read).
    pub client_rss_per_connection: Option<u64>,
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

    /// Why these figures say more about the generator than the server:
    /// it sent the frames nothing held back late (schedule lag p99 above
    /// 2 ms: a busy core, too few sockets), or sent noticeably less than
    /// was offered although nothing held it back. `None` when the
    /// generator kept its schedule.
    pub fn generator_behind(&self) -> Option<String> {
        let lag_p99_ms = self.lag_ns.value_at_quantile(0.99) as f64 / 1e6;
        // Frames held back by the in-flight cap waited for the server's
        // answers: sending fewer for that reason is the measurement.
        let short = self.held_back == 0 && self.sent as f64 + 0.5 < self.offered as f64 * 0.97;
        (short || lag_p99_ms > 2.0).then(|| {
            format!(
                "the load generator could not keep up: it sent {} of {} frames offered, \
                 schedule lag p99 {lag_p99_ms:.1} ms; give it a core of its own, more \
                 --sockets, or a lower rate",
                self.sent, self.offered
            )
        })
    }
}

/// Resident memory of this process, in bytes, from `/proc/self/status`.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
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
    if spec.sockets == Some(0) {
        return Err(LoadError::Spec("sockets must be at least 1".into()));
    }
    if let Some(rate) = spec.handshake_rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(LoadError::Spec(
            "handshake rate must be a positive number".into(),
        ));
    }
    let rss_before = rss_bytes();
    let connected = connect_all(spec, tls).await?;
    let client_rss_per_connection = rss_before
        .zip(rss_bytes())
        .map(|(before, after)| after.saturating_sub(before) / spec.connections as u64);
    let start = Instant::now();
    let stop_at = start + spec.duration;
    let stopped = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Latencies::new()));
    let pacer = Arc::new(Pacer::default());
    // In a set of its own so that it is aborted when `run` returns, by
    // any path.
    let mut pacing = tokio::task::JoinSet::new();
    pacing.spawn({
        let pacer = Arc::clone(&pacer);
        async move { pacer.run().await }
    });
    let ctx = Arc::new(RunCtx {
        spec: spec.clone(),
        mix,
        progress,
        stop_at,
        stopped,
        latencies: Arc::clone(&latencies),
        pacer,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (conn, pipe)) in connected.pipes.into_iter().enumerate() {
        let ctx = Arc::clone(&ctx);
        tasks.spawn(async move {
            let r = drive(i, pipe, &ctx).await;
            conn.close(0u32.into(), b"load done");
            r
        });
    }
    let mut total = ConnReport::new(&latencies);
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(r) => total.merge(r),
            Err(e) => {
                total.errors += 1;
                total.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    // The endpoints shared by several connections close with the last.
    drop(connected.endpoints);
    // Every task has ended and dropped its samples into `latencies`.
    let (latency, round_trip, lag) = {
        let h = latencies.lock().unwrap_or_else(|p| p.into_inner());
        (h.latency.clone(), h.round_trip.clone(), h.lag.clone())
    };
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
        latency_ns: latency,
        round_trip_ns: round_trip,
        lag_ns: lag,
        offered: total.offered,
        sent: total.sent,
        held_back: total.held_back,
        connect_elapsed: connected.elapsed,
        handshake_ns: connected.handshakes,
        client_rss_per_connection,
        first_error: total.first_error,
    })
}

/// Every connection with its stream, and how connecting went.
struct Connected {
    pipes: Vec<(quinn::Connection, Pipeline)>,
    endpoints: Vec<quinn::Endpoint>,
    elapsed: Duration,
    handshakes: Histogram<u64>,
}

/// Connects `spec.connections` connections, at most
/// [`MAX_CONCURRENT_HANDSHAKES`] at a time and at `spec.handshake_rate`,
/// over `spec.sockets` shared sockets (or one each).
async fn connect_all(spec: &LoadSpec, tls: &TlsCredentials) -> Result<Connected, LoadError> {
    let config = client_config(tls)?;
    let endpoints = match spec.sockets {
        Some(n) => (0..n.min(spec.connections))
            .map(|_| client_endpoint(spec.addr))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let began = Instant::now();
    let pace = spec
        .handshake_rate
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let mut handshakes = new_histogram();
    let mut pending = tokio::task::JoinSet::new();
    let mut pipes: Vec<Option<(quinn::Connection, Pipeline)>> =
        (0..spec.connections).map(|_| None).collect();
    let mut next = 0usize;
    while next < spec.connections || !pending.is_empty() {
        while next < spec.connections && pending.len() < MAX_CONCURRENT_HANDSHAKES {
            if let Some(pace) = pace {
                tokio::time::sleep_until(began + pace.mul_f64(next as f64)).await;
            }
            let endpoint = match endpoints.get(next % endpoints.len().max(1)) {
                Some(e) => e.clone(),
                None => client_endpoint(spec.addr)?,
            };
            let (config, addr, name) = (config.clone(), spec.addr, spec.server_name.clone());
            let index = next;
            pending.spawn(async move {
                let t0 = Instant::now();
                let conn = connect_on(&endpoint, &config, addr, &name).await?;
                let took = t0.elapsed();
                let (send, recv) = conn.open_bi().await.map_err(ClientError::from)?;
                Ok::<_, ClientError>((index, took, conn, Pipeline::new(send, recv)))
            });
            next += 1;
        }
        match pending.join_next().await {
            Some(Ok(Ok((index, took, conn, pipe)))) => {
                handshakes.saturating_record(took.as_nanos().min(u128::from(u64::MAX)) as u64);
                if let Some(slot) = pipes.get_mut(index) {
                    *slot = Some((conn, pipe));
                }
            }
            Some(Ok(Err(e))) => return Err(e.into()),
            Some(Err(e)) => return Err(LoadError::Spec(format!("a connect task failed: {e}"))),
            None => {}
        }
    }
    Ok(Connected {
        pipes: pipes.into_iter().flatten().collect(),
        endpoints,
        elapsed: began.elapsed(),
        handshakes,
    })
}

struct ConnReport {
    frames: u64,
    decisions: u64,
    grants: u64,
    denies: u64,
    errors: u64,
    offered: u64,
    sent: u64,
    held_back: u64,
    samples: Samples,
    last: Option<Instant>,
    first_error: Option<String>,
}

impl ConnReport {
    fn new(latencies: &Arc<Mutex<Latencies>>) -> Self {
        Self {
            frames: 0,
            decisions: 0,
            grants: 0,
            denies: 0,
            errors: 0,
            offered: 0,
            sent: 0,
            held_back: 0,
            samples: Samples::new(latencies),
            last: None,
            first_error: None,
        }
    }

    /// Adds `o`'s counts (its samples go to the shared histograms as it
    /// drops).
    fn merge(&mut self, o: ConnReport) {
        self.frames += o.frames;
        self.decisions += o.decisions;
        self.grants += o.grants;
        self.denies += o.denies;
        self.errors += o.errors;
        self.offered += o.offered;
        self.sent += o.sent;
        self.held_back += o.held_back;
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

/// The latency histograms of a run, shared by all its connections.
///
/// Why shared: a histogram of 1 ns to 60 s at three significant digits is
/// 216 KiB of counts. One set per connection made a 2,000-connection run
/// allocate 1.3 GB, and the generator spent half its core in the kernel
/// zeroing those pages (then the merge read them all), which is what the
/// fleet figures measured instead of the server.
struct Latencies {
    latency: Histogram<u64>,
    round_trip: Histogram<u64>,
    lag: Histogram<u64>,
}

impl Latencies {
    fn new() -> Self {
        Self {
            latency: new_histogram(),
            round_trip: new_histogram(),
            lag: new_histogram(),
        }
    }
}

/// Samples one connection has not yet added to the shared [`Latencies`]:
/// added [`Samples::FLUSH_AT`] at a time (one lock per few hundred frames)
/// and when it drops.
struct Samples {
    shared: Arc<Mutex<Latencies>>,
    /// Latency and round trip of each answered frame.
    answered: Vec<(u64, u64)>,
    lag: Vec<u64>,
}

impl Samples {
    const FLUSH_AT: usize = 256;

    fn new(shared: &Arc<Mutex<Latencies>>) -> Self {
        Self {
            shared: Arc::clone(shared),
            answered: Vec::new(),
            lag: Vec::new(),
        }
    }

    fn answered(&mut self, latency_ns: u64, round_trip_ns: u64) {
        self.answered.push((latency_ns, round_trip_ns));
        if self.answered.len() >= Self::FLUSH_AT {
            self.flush();
        }
    }

    fn lag(&mut self, ns: u64) {
        self.lag.push(ns);
        if self.lag.len() >= Self::FLUSH_AT {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.answered.is_empty() && self.lag.is_empty() {
            return;
        }
        // A poisoned lock only means another connection's task panicked
        // while adding; the counts it holds are still counts.
        let mut h = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        for (latency, round_trip) in self.answered.drain(..) {
            h.latency.saturating_record(latency);
            h.round_trip.saturating_record(round_trip);
        }
        for lag in self.lag.drain(..) {
            h.lag.saturating_record(lag);
        }
    }
}

impl Drop for Samples {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A frame sent and not yet answered.
#[derive(Clone, Copy)]
struct Outstanding {
    /// When it was meant to go (closed loop: when it went).
    intended: Instant,
    /// When it went.
    sent: Instant,
}

/// When an open-loop connection sends: Poisson arrivals at `per_sec`,
/// from a random phase, as independent readers do (a fixed interval
/// would have every connection fire in the same millisecond).
struct Schedule {
    next_due: Instant,
    mean: f64,
    rng: fastrand::Rng,
}

impl Schedule {
    fn new(index: usize, start: Instant, per_sec: f64) -> Self {
        let mut rng = fastrand::Rng::with_seed(0x5eed ^ index as u64);
        let mean = 1.0 / per_sec;
        let first = Duration::from_secs_f64(rng.f64() * mean);
        Self {
            next_due: start + first,
            mean,
            rng,
        }
    }

    fn advance(&mut self) {
        // Exponential inter-arrival: -ln(U) × mean, U in (0, 1].
        let u = 1.0 - self.rng.f64();
        self.next_due += Duration::from_secs_f64(-u.ln() * self.mean);
    }
}

/// What every connection's loop of one run shares.
struct RunCtx {
    spec: LoadSpec,
    mix: Arc<Vec<MixRequest>>,
    progress: Arc<Progress>,
    stop_at: Instant,
    stopped: Arc<AtomicBool>,
    latencies: Arc<Mutex<Latencies>>,
    /// Wakes open-loop sends on time (see [`pacer`]).
    pacer: Arc<Pacer>,
}

/// One connection's loop.
async fn drive(index: usize, mut pipe: Pipeline, run: &RunCtx) -> ConnReport {
    let RunCtx {
        spec,
        mix,
        progress,
        stop_at,
        stopped,
        latencies,
        pacer,
    } = run;
    let (stop_at, stopped) = (*stop_at, &**stopped);
    let mut report = ConnReport::new(latencies);
    // Spread the connections over the mix so they do not ask in lockstep.
    let mut cursor = index.wrapping_mul(7919) % mix.len();
    let mut next_id: u32 = 1;
    // Outstanding frames, in order (answers come in order).
    let mut sent: VecDeque<Outstanding> = VecDeque::with_capacity(spec.in_flight);
    let mut schedule = spec
        .rate
        .map(|r| Schedule::new(index, Instant::now(), r / spec.connections as f64));
    // Open loop: a due frame found the connection at its in-flight cap;
    // frames sent before the backlog clears were held back, not late.
    let mut capped = false;
    let mut items: Vec<RequestFrame<'_>> = Vec::with_capacity(spec.batch);
    let mut sending = true;
    loop {
        let now = Instant::now();
        if sending && now >= stop_at {
            sending = false;
            stopped.store(true, Ordering::Relaxed);
            if let Some(schedule) = &mut schedule {
                // Due and never sent: offered all the same.
                while schedule.next_due < stop_at {
                    report.offered += 1;
                    schedule.advance();
                }
            }
        }
        if sending {
            // Queue what is due: in closed loop, up to `in_flight`
            // outstanding; in open loop, every frame whose time has come
            // (capped at `in_flight`; the latency still counts from the
            // intended time).
            loop {
                let intended = match &schedule {
                    None => now,
                    Some(s) if s.next_due > now => {
                        capped = false;
                        break;
                    }
                    Some(s) => s.next_due,
                };
                if sent.len() >= spec.in_flight {
                    capped = schedule.is_some();
                    break;
                }
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
                    Some(Ok(())) => {
                        sent.push_back(Outstanding {
                            intended,
                            sent: now,
                        });
                        report.sent += 1;
                        report.offered += 1;
                    }
                    Some(Err(e)) => report.error(e),
                    None => break,
                }
                if let Some(s) = &mut schedule {
                    if capped {
                        report.held_back += 1;
                    } else {
                        let late = now.duration_since(intended);
                        report
                            .samples
                            .lag(late.as_nanos().min(u128::from(u64::MAX)) as u64);
                    }
                    s.advance();
                }
            }
            if let Err(e) = pipe.flush().await {
                report.error(e);
                return report;
            }
        }
        // When to wake for the next send. A connection at its in-flight cap
        // has a frame already due: waiting for that time would return at
        // once and spin, starving every other connection of the thread
        // (the generator "collapsing" under open loop); it waits for an
        // answer instead (or the end).
        let next_due = schedule.as_ref().map(|s| {
            if capped {
                stop_at
            } else {
                s.next_due.min(stop_at)
            }
        });
        if sent.is_empty() {
            if !sending {
                break;
            }
            if let Some(due) = next_due {
                // Nothing outstanding: sleep until the next send is due.
                pacer.sleep_until(due).await;
                continue;
            }
        }
        let read = match (next_due, sending) {
            (Some(due), true) => {
                tokio::select! {
                    r = pipe.read(|f| on_frame(f, &mut sent, &mut report, progress)) => Some(r),
                    () = pacer.sleep_until(due) => None,
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
    sent: &mut VecDeque<Outstanding>,
    report: &mut ConnReport,
    progress: &Progress,
) {
    let now = Instant::now();
    let Some(o) = sent.pop_front() else {
        report.error(format!("unsolicited {:?} frame", frame.frame_type()));
        return;
    };
    let ns = |since: Instant| {
        now.duration_since(since)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64
    };
    report
        .samples
        .answered(ns(o.intended).max(1), ns(o.sent).max(1));
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
