//! The QUIC decision server.
//!
//! ```text
//!  Endpoint ──accept──▶ connection task (semaphore permit, ReaderScope from the cert)
//!                          └─accept_bi──▶ stream task: read ▶ decode ▶ Decider ▶ encode ▶ write
//!  shutdown ──watch──▶ every task: GOING_AWAY, drain, close with SHUTDOWN
//! ```
//!
//! The request path reads no clock and takes no lock of its own: the
//! [`Decider`] gets the request and answers synchronously (the binary's
//! decider loads the current snapshot once, via `arc-swap`). Frames of one
//! stream are answered in order; a client wanting parallelism pipelines
//! frames or opens more streams.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use accessd_engine::{Decision, Reason, Request, Verdict};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::frame::{
    BatchResponseWriter, ErrorCode, Frame, FrameReader, InvalidFrame, ReadBuf, RequestFrame,
    ResponseFrame, encode_error, encode_pong_frame, encode_response,
};
use crate::identity::{IdentityError, ReaderScope};
use crate::tls::{TlsCredentials, TlsError};

/// QUIC application close codes (`CONNECTION_CLOSE` frames of type 0x1d).
pub mod close {
    /// Normal close by either side.
    pub const NO_ERROR: u32 = 0;
    /// The server is shutting down.
    pub const SHUTDOWN: u32 = 1;
    /// The framing of a stream was lost (unsupported version, frame above
    /// the size limit): the stream cannot be read any further.
    pub const PROTOCOL_ERROR: u32 = 2;
    /// The client certificate names no reader.
    pub const NOT_AUTHORIZED: u32 = 3;
}

/// The answer of a [`Decider`]: the decision and the age of the data it
/// was made on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The decision.
    pub decision: Decision,
    /// Milliseconds between the snapshot's `as_of` and now (saturating).
    pub snapshot_age_ms: u32,
}

/// One request as the server received it: the question, and what the
/// access event records beside it.
#[derive(Clone, Copy, Debug)]
pub struct Asked<'a> {
    /// The question.
    pub request: Request<'a>,
    /// The client's id of the request.
    pub request_id: u32,
    /// The reader's clock when it sent the request, if it said.
    pub reader_time_ms: Option<i64>,
    /// The client certificate's identity (see [`ReaderScope::identity`]).
    pub client: &'a str,
}

/// What the decisions of one chunk of frames of one client leave behind:
/// an access-event record, appended to by [`Decider::decide`] and
/// [`Decider::refuse`] and made durable by [`Decider::commit`] before any
/// of their answers is sent.
#[derive(Debug, Default)]
pub struct Journal {
    /// The records being written.
    pub events: accessd_engine::RecordWriter,
    /// Event ids set aside for this journal's connection: the decider
    /// takes them from its shared counter a block at a time, so that
    /// connections on different cores do not contend for it per event.
    pub ids: std::ops::Range<u64>,
}

impl Journal {
    /// Empties it, keeping its buffer (and its ids).
    pub fn clear(&mut self) {
        self.events.clear();
    }
}

/// Where decisions come from. The protocol crate does not know how
/// snapshots are built or swapped; the binary implements this with the
/// engine's shared snapshot, presence state and `decide`.
///
/// The server decides the frames of one read of a stream (a chunk) as a
/// unit: [`Decider::begin`] once, then `decide` and `refuse` for each
/// request, then `commit` once, before the chunk's answers are written.
/// All of it is on the request path: no I/O, no waiting.
pub trait Decider: Send + Sync + 'static {
    /// What the decisions of one chunk share: for the binary's decider,
    /// the snapshot (loaded once, so a chunk is decided on one version)
    /// and the clock (read once, when the chunk is taken up).
    type Chunk;

    /// Begins a chunk of frames.
    fn begin(&self) -> Self::Chunk;

    /// Decides one request of `chunk`, recording its event in `journal`
    /// if it keeps events.
    fn decide(&self, chunk: &Self::Chunk, asked: &Asked<'_>, journal: &mut Journal) -> Answer;

    /// A deny for `reason` on the chunk's snapshot (used for requests the
    /// server refuses itself, such as a reader outside the client's scope),
    /// recorded like a decision.
    fn refuse(
        &self,
        chunk: &Self::Chunk,
        asked: &Asked<'_>,
        reason: Reason,
        journal: &mut Journal,
    ) -> Answer;

    /// Called with the requests of a `BATCH_REQUEST` before they are
    /// decided one by one, so that a decider can start their memory reads
    /// together (see `Snapshot::prefetch`). Must not change any answer.
    /// The default does nothing.
    fn prepare(&self, chunk: &Self::Chunk, requests: &[Request<'_>]) {
        let _ = (chunk, requests);
    }

    /// Makes the chunk's events durable (against a crash of the process)
    /// before its answers go out. The default keeps nothing.
    fn commit(&self, journal: &mut Journal) {
        journal.clear();
    }
}

/// Limits of one server. The defaults suit a site with a few thousand
/// readers on a small machine; each is documented in `PROTOCOL.md`.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections served at once; more are refused with QUIC's
    /// `CONNECTION_REFUSED`.
    pub max_connections: usize,
    /// Bidirectional streams a client may have open at once.
    pub max_streams_per_connection: u32,
    /// Bytes a client may send on a stream ahead of the server reading
    /// them: with the stream count, this bounds requests in flight.
    pub stream_receive_window: u32,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// On shutdown, how long clients get to finish sending.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_streams_per_connection: 8,
            stream_receive_window: 64 * 1024,
            idle_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(2),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The TLS material was refused.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A limit is out of range (the idle timeout above QUIC's maximum).
    #[error("bad limit: {0}")]
    Limit(String),
    /// The UDP socket could not be bound. Fix: free the port or pick
    /// another address.
    #[error("cannot bind `{0}`: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Binds a QUIC endpoint that serves this protocol with mutual TLS.
pub fn bind(
    addr: SocketAddr,
    tls: &TlsCredentials,
    limits: &Limits,
) -> Result<Endpoint, ServerError> {
    let config = server_config(tls, limits)?;
    Endpoint::server(config, addr).map_err(|e| ServerError::Bind(addr, e))
}

/// The QUIC endpoints that serve one address together. quinn handles
/// every datagram of an endpoint on one task, so one endpoint keeps one
/// core busy at most for its packets; several endpoints on `SO_REUSEPORT`
/// sockets let the kernel spread clients over them (by the hash of their
/// address and port), each endpoint on its own task.
///
/// The price: a client whose address or port changes (a NAT rebinding)
/// may land on an endpoint that does not know its connection; it gets a
/// stateless reset and reconnects (one handshake). See
/// `docs/benchmarks.md` ("Fleet") for why this and not routing by
/// connection id.
#[derive(Clone, Debug)]
pub struct Endpoints(Arc<[Endpoint]>);

impl From<Endpoint> for Endpoints {
    fn from(endpoint: Endpoint) -> Self {
        Self(Arc::from([endpoint]))
    }
}

impl Endpoints {
    /// The address served.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self.0.first() {
            Some(e) => e.local_addr(),
            None => Err(std::io::Error::other("no endpoint")),
        }
    }

    /// Connections open now, over every endpoint.
    pub fn open_connections(&self) -> usize {
        self.0.iter().map(Endpoint::open_connections).sum()
    }

    /// Sets the server configuration of every endpoint (certificate
    /// rotation; `None` stops accepting).
    pub fn set_server_config(&self, config: Option<quinn::ServerConfig>) {
        for e in self.0.iter() {
            e.set_server_config(config.clone());
        }
    }

    /// The endpoints.
    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        self.0.iter()
    }

    /// How many endpoints serve the address.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none (never, for a bound server).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Binds `count` QUIC endpoints on `addr` with `SO_REUSEPORT` (one plain
/// endpoint when `count` is 1). Port 0 picks one free port for all.
pub fn bind_endpoints(
    addr: SocketAddr,
    tls: &TlsCredentials,
    limits: &Limits,
    count: usize,
) -> Result<Endpoints, ServerError> {
    if count <= 1 {
        return bind(addr, tls, limits).map(Endpoints::from);
    }
    let config = server_config(tls, limits)?;
    let runtime = Arc::new(quinn::TokioRuntime);
    // A plain bind first: it fails if anything holds the address, so a
    // second server started by mistake is refused ("address in use")
    // instead of silently sharing the port through SO_REUSEPORT. It also
    // picks the port when `addr` says 0.
    let at = std::net::UdpSocket::bind(addr)
        .and_then(|probe| probe.local_addr())
        .map_err(|e| ServerError::Bind(addr, e))?;
    let mut endpoints = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = reuseport_socket(at).map_err(|e| ServerError::Bind(at, e))?;
        let endpoint = Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(config.clone()),
            socket,
            runtime.clone(),
        )
        .map_err(|e| ServerError::Bind(at, e))?;
        endpoints.push(endpoint);
    }
    Ok(Endpoints(endpoints.into()))
}

fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The endpoint configuration [`bind`] serves with. Give a new one to a
/// running endpoint (`Endpoint::set_server_config`) to rotate
/// certificates: new handshakes use it, connections already open keep
/// theirs.
pub fn server_config(
    tls: &TlsCredentials,
    limits: &Limits,
) -> Result<quinn::ServerConfig, ServerError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls.server_config()?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut transport = quinn::TransportConfig::default();
    let streams = limits.max_streams_per_connection;
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(limits.stream_receive_window))
        .receive_window(
            VarInt::from_u64(u64::from(limits.stream_receive_window) * u64::from(streams.max(1)))
                .unwrap_or(VarInt::MAX),
        )
        .max_idle_timeout(Some(
            limits
                .idle_timeout
                .try_into()
                .map_err(|_| ServerError::Limit("idle timeout too long".into()))?,
        ))
        // Requests travel on streams only (see PROTOCOL.md).
        .datagram_receive_buffer_size(None);
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Serves `endpoint` until `shutdown` completes, then shuts down
/// gracefully: stops accepting, tells every stream `GOING_AWAY`, answers
/// every frame received until the client finishes its side (or
/// `drain_timeout` passes), and closes every connection with
/// [`close::SHUTDOWN`].
pub async fn run<D: Decider>(
    endpoints: impl Into<Endpoints>,
    decider: Arc<D>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let endpoints: Endpoints = endpoints.into();
    let counters = Arc::new(DecisionCounters::register());
    tokio::pin!(shutdown);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    // One accepting task per endpoint, into one queue: the connection
    // limit and the shutdown stay in one place.
    let (incoming_tx, mut incoming_rx) = tokio::sync::mpsc::channel::<quinn::Incoming>(64);
    let mut acceptors = JoinSet::new();
    for endpoint in endpoints.iter() {
        let (endpoint, tx) = (endpoint.clone(), incoming_tx.clone());
        acceptors.spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                if tx.send(incoming).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(incoming_tx);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            incoming = incoming_rx.recv() => {
                let Some(incoming) = incoming else { break };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    metrics::counter!(crate::metrics::CONNECTIONS_REFUSED, "reason" => "limit").increment(1);
                    incoming.refuse();
                    continue;
                };
                let ctx = ConnCtx {
                    decider: decider.clone(),
                    counters: counters.clone(),
                    stop: stop_rx.clone(),
                    drain: limits.drain_timeout,
                    max_streams: limits.max_streams_per_connection,
                };
                conns.spawn(async move {
                    serve_connection(incoming, ctx).await;
                    drop(permit);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    tracing::info!(
        connections = conns.len(),
        "shutting down: draining connections"
    );
    endpoints.set_server_config(None);
    acceptors.abort_all();
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.drain_timeout + Duration::from_secs(1), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
    }
    for endpoint in endpoints.iter() {
        endpoint.close(VarInt::from_u32(close::SHUTDOWN), b"server shutting down");
    }
    // Let the CONNECTION_CLOSE frames go out.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        for endpoint in endpoints.iter() {
            endpoint.wait_idle().await;
        }
    })
    .await;
}

struct ConnCtx<D> {
    decider: Arc<D>,
    counters: Arc<DecisionCounters>,
    stop: watch::Receiver<bool>,
    drain: Duration,
    max_streams: u32,
}

/// The stream limit below which quinn announces returned stream credit at
/// once: it sends `MAX_STREAMS` only when more than `limit / 8` streams'
/// worth of credit is waiting, so from 8 streams up it waits for two
/// closes (quinn-proto `StreamsState::queue_max_stream_id`).
const QUINN_IMMEDIATE_CREDIT_LIMIT: u32 = 7;

/// Makes quinn announce the credit of a stream that just closed now, not
/// after the next one closes, as `PROTOCOL.md` promises ("opening a ninth
/// waits until one closes"): lowering the target limit makes the waiting
/// update significant (quinn then queues `MAX_STREAMS`), and restoring it
/// keeps the limit. The peer's credit never shrinks (QUIC credit only
/// grows), and a stream freed between the two calls gets its credit when
/// the limit is restored.
fn return_stream_credit(conn: &Connection, limit: u32) {
    if limit > QUINN_IMMEDIATE_CREDIT_LIMIT {
        conn.set_max_concurrent_bi_streams(VarInt::from_u32(QUINN_IMMEDIATE_CREDIT_LIMIT));
        conn.set_max_concurrent_bi_streams(VarInt::from_u32(limit));
    }
}

/// Decrements the active-connections gauge however the task ends.
struct ActiveGuard;

impl ActiveGuard {
    fn new() -> Self {
        metrics::gauge!(crate::metrics::CONNECTIONS_ACTIVE).increment(1.0);
        Self
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::CONNECTIONS_ACTIVE).decrement(1.0);
    }
}

fn scope_of(conn: &Connection) -> Result<ReaderScope, IdentityError> {
    let certs = conn
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or(IdentityError::NoCertificate)?;
    let leaf = certs.first().ok_or(IdentityError::NoCertificate)?;
    ReaderScope::from_certificate(leaf)
}

async fn serve_connection<D: Decider>(incoming: quinn::Incoming, ctx: ConnCtx<D>) {
    let remote = incoming.remote_address();
    let conn = match incoming.accept() {
        Ok(connecting) => connecting.await,
        Err(e) => Err(e),
    };
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            // No client certificate, one from another CA, wrong ALPN...
            metrics::counter!(crate::metrics::HANDSHAKE_FAILURES).increment(1);
            tracing::debug!(%remote, error = %e, "handshake failed");
            return;
        }
    };
    metrics::counter!(crate::metrics::CONNECTIONS).increment(1);
    let _active = ActiveGuard::new();
    let scope = match scope_of(&conn) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            metrics::counter!(crate::metrics::CONNECTIONS_REFUSED, "reason" => "identity")
                .increment(1);
            tracing::info!(%remote, error = %e, "refusing client");
            conn.close(
                VarInt::from_u32(close::NOT_AUTHORIZED),
                e.to_string().as_bytes(),
            );
            return;
        }
    };
    let mut streams = JoinSet::new();
    // One wait for shutdown for the connection's life: registered once,
    // not once per accepted stream.
    let stop = stopped(ctx.stop.clone());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            s = conn.accept_bi() => match s {
                Ok((send, recv)) => {
                    let stream = StreamCtx {
                        conn: conn.clone(),
                        scope: scope.clone(),
                        decider: ctx.decider.clone(),
                        counters: ctx.counters.clone(),
                        stop: ctx.stop.clone(),
                        drain: ctx.drain,
                    };
                    streams.spawn(serve_stream(send, recv, stream));
                }
                // Closed by the client, timed out, or closed by a stream
                // task after a protocol error.
                Err(_) => {
                    streams.abort_all();
                    return;
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {
                // The stream task waited until the client had every
                // answer, so quinn has freed the stream by now.
                return_stream_credit(&conn, ctx.max_streams);
            }
        }
    }
    while streams.join_next().await.is_some() {}
    conn.close(VarInt::from_u32(close::SHUTDOWN), b"server shutting down");
}

struct StreamCtx<D> {
    conn: Connection,
    scope: Arc<ReaderScope>,
    decider: Arc<D>,
    counters: Arc<DecisionCounters>,
    stop: watch::Receiver<bool>,
    drain: Duration,
}

async fn serve_stream<D: Decider>(mut send: SendStream, mut recv: RecvStream, ctx: StreamCtx<D>) {
    let mut chunk = ReadBuf::default();
    let mut reader = FrameReader::default();
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut journal = Journal::default();
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let stop = stopped(ctx.stop.clone());
    tokio::pin!(stop);
    loop {
        let read = match drain_deadline {
            None => tokio::select! {
                r = recv.read(chunk.for_read()) => r,
                () = &mut stop => {
                    encode_error(&mut out, ErrorCode::GOING_AWAY, 0, "server shutting down");
                    drain_deadline = Some(tokio::time::Instant::now() + ctx.drain);
                    if send.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                    continue;
                }
            },
            Some(deadline) => tokio::select! {
                r = recv.read(chunk.for_read()) => r,
                () = tokio::time::sleep_until(deadline) => break,
            },
        };
        let n = match read {
            Ok(Some(n)) => n,
            Ok(None) => {
                if reader.buffered() > 0 {
                    note_malformed(ErrorCode::TRUNCATED);
                    encode_error(
                        &mut out,
                        ErrorCode::TRUNCATED,
                        0,
                        &format!(
                            "stream ended inside a frame ({} byte(s) of it)",
                            reader.buffered()
                        ),
                    );
                }
                break;
            }
            // Reset by the client or connection lost: nobody to answer.
            Err(_) => return,
        };
        let arrived = Instant::now();
        let outcome = process(&mut reader, chunk.got(n), &mut out, &mut journal, &ctx);
        if !out.is_empty() {
            if send.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
            crate::stats::STATS.service_time(arrived.elapsed());
        }
        if let Err(fatal) = outcome {
            // The framing is lost. Deliver the answers and the error frame
            // already written (briefly: a client that does not read gets
            // the close alone), then close; the close carries the code and
            // reason too.
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
            ctx.conn.close(
                VarInt::from_u32(close::PROTOCOL_ERROR),
                fatal.to_string().as_bytes(),
            );
            return;
        }
    }
    if !out.is_empty() {
        let _ = send.write_all(&out).await;
    }
    let _ = send.finish();
    // Wait until the client has the answers (or the connection is gone)
    // before the connection task may close the connection.
    let _ = tokio::time::timeout(ctx.drain, send.stopped()).await;
}

/// Completes once shutdown has been signalled. Pinned once per stream or
/// connection and polled by every `select!`: a fresh wait per read would
/// register and deregister a waiter on the channel's shared list each time
/// (a lock every stream takes, on every request).
async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means "stop".
    let _ = stop.wait_for(|s| *s).await;
}

fn note_malformed(code: ErrorCode) {
    metrics::counter!(crate::metrics::FRAMES_MALFORMED, "code" => code.name()).increment(1);
}

/// The decision counters, looked up in the metrics registry once per
/// server rather than once per chunk (a lookup hashes the name and labels
/// and takes the registry's lock).
struct DecisionCounters {
    grant: metrics::Counter,
    deny: metrics::Counter,
    not_permitted: metrics::Counter,
}

impl DecisionCounters {
    fn register() -> Self {
        Self {
            grant: metrics::counter!(crate::metrics::DECISIONS, "verdict" => "grant"),
            deny: metrics::counter!(crate::metrics::DECISIONS, "verdict" => "deny"),
            not_permitted: metrics::counter!(crate::metrics::READER_NOT_PERMITTED),
        }
    }
}

/// Decision counts of one chunk, flushed to metrics once per chunk so the
/// per-request cost stays a few additions.
#[derive(Default)]
struct Tally {
    grant: u64,
    deny: u64,
    not_permitted: u64,
}

impl Tally {
    fn flush(&self, counters: &DecisionCounters) {
        crate::stats::STATS.count(self.grant, self.deny);
        if self.grant > 0 {
            counters.grant.increment(self.grant);
        }
        if self.deny > 0 {
            counters.deny.increment(self.deny);
        }
        if self.not_permitted > 0 {
            counters.not_permitted.increment(self.not_permitted);
        }
    }
}

/// Answers every frame that `fresh` completes, appending to `out` (an
/// ERROR for each invalid one); fails with the invalid frame after which
/// the stream cannot be read any further.
fn process<D: Decider>(
    reader: &mut FrameReader,
    fresh: &[u8],
    out: &mut Vec<u8>,
    journal: &mut Journal,
    ctx: &StreamCtx<D>,
) -> Result<(), InvalidFrame> {
    let mut tally = Tally::default();
    // One snapshot and one clock reading for the whole chunk: a load of
    // the shared snapshot is two atomic read-modify-writes, a clock
    // reading a call into the vDSO, and a chunk of a pipelining client
    // holds dozens of requests.
    let chunk = ctx.decider.begin();
    let result = reader.feed(fresh, |item| {
        match item {
            Ok(frame) => handle(frame, out, journal, &chunk, ctx, &mut tally),
            Err(inv) => {
                note_malformed(inv.code());
                encode_error(out, inv.code(), inv.request_id, &inv.to_string());
            }
        }
        Ok::<(), InvalidFrame>(())
    });
    drop(chunk);
    tally.flush(&ctx.counters);
    // Before the caller writes `out`: an answered decision has its event.
    if journal.events.count() > 0 {
        ctx.decider.commit(journal);
    }
    result
}

fn answer<D: Decider>(
    r: &RequestFrame<'_>,
    journal: &mut Journal,
    chunk: &D::Chunk,
    ctx: &StreamCtx<D>,
    tally: &mut Tally,
) -> ResponseFrame {
    let asked = Asked {
        request: r.to_engine(),
        request_id: r.request_id,
        reader_time_ms: r.reader_time_ms,
        client: ctx.scope.identity(),
    };
    let a = if ctx.scope.permits(r.reader) {
        ctx.decider.decide(chunk, &asked, journal)
    } else {
        tally.not_permitted += 1;
        ctx.decider
            .refuse(chunk, &asked, Reason::ReaderNotPermitted, journal)
    };
    let d = a.decision;
    // Fail closed: whatever a decider returns, only a grant reason grants.
    let verdict = if d.verdict == Verdict::Grant && d.reason.verdict() == Verdict::Grant {
        tally.grant += 1;
        Verdict::Grant
    } else {
        tally.deny += 1;
        Verdict::Deny
    };
    ResponseFrame {
        request_id: r.request_id,
        verdict,
        reason: d.reason.code(),
        unlock_ms: if verdict == Verdict::Grant {
            d.unlock_ms
        } else {
            0
        },
        snapshot_version: d.snapshot_version,
        snapshot_age_ms: a.snapshot_age_ms,
    }
}

fn handle<D: Decider>(
    frame: Frame<'_>,
    out: &mut Vec<u8>,
    journal: &mut Journal,
    chunk: &D::Chunk,
    ctx: &StreamCtx<D>,
    tally: &mut Tally,
) {
    match frame {
        Frame::Request(r) => encode_response(out, &answer(&r, journal, chunk, ctx, tally)),
        Frame::BatchRequest(b) => {
            let requests: Vec<Request<'_>> = b.iter().map(|r| r.to_engine()).collect();
            ctx.decider.prepare(chunk, &requests);
            let mut w = BatchResponseWriter::begin(out);
            for r in b.iter() {
                w.push(&answer(&r, journal, chunk, ctx, tally));
            }
            // Cannot fail: the batch decoded with 1..=MAX_BATCH items and
            // responses are smaller than requests' limit allows.
            if let Err(e) = w.finish() {
                tracing::error!(error = %e, "batch response not encodable");
            }
        }
        Frame::Ping(nonce) => encode_pong_frame(out, nonce),
        Frame::Error(e) => {
            metrics::counter!(crate::metrics::CLIENT_ERRORS).increment(1);
            tracing::debug!(code = %e.code, text = e.text, "client sent an error frame");
        }
        Frame::Response(_) | Frame::BatchResponse(_) | Frame::Pong(_) => {
            note_malformed(ErrorCode::UNEXPECTED_FRAME);
            let id = match frame {
                Frame::Response(r) => r.request_id,
                _ => 0,
            };
            encode_error(
                out,
                ErrorCode::UNEXPECTED_FRAME,
                id,
                &format!("a client may not send a {:?} frame", frame.frame_type()),
            );
        }
    }
}
