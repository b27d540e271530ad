//! The Rust client: connect with a certificate, then `decide` and
//! `decide_batch` from as many tasks as you like; requests are pipelined on
//! one stream. [`Pipeline`] is the lower-level handle the load generator
//! uses: a raw stream with frame encoding and decoding, no tasks.
//!
//! ```text
//!  decide() ─┐                         ┌─ oneshot ◀─┐
//!  decide() ─┼─▶ mpsc ─▶ writer task ──┼─▶ stream ──┼─▶ reader task
//!  batch()  ─┘   (coalesces writes)    └─ FIFO of waiters (answers come in order)
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use accessd_engine::Request;
use quinn::{Connection, ConnectionError, Endpoint, RecvStream, SendStream, VarInt};
use tokio::sync::{mpsc, oneshot};

use crate::frame::{
    EncodeError, ErrorCode, Frame, FrameReader, InvalidFrame, ReadBuf, RequestFrame, ResponseFrame,
    encode_batch_request, encode_ping_frame, encode_request,
};
use crate::server::close;
use crate::tls::{TlsCredentials, TlsError};

/// Why a client call failed. A failed call never means "granted".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The TLS material was refused.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The request cannot be encoded (reader id or PIN out of range).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// No connection could be made (unreachable, handshake refused).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection closed; `code` is the application close code when
    /// the peer gave one (see `server::close`).
    #[error("connection closed: {reason}")]
    Closed {
        /// The application close code, if any.
        code: Option<u32>,
        /// What quinn or the peer said.
        reason: String,
    },
    /// The server answered with an error frame.
    #[error("server error {code}: {text}")]
    Server {
        /// The error code.
        code: ErrorCode,
        /// The server's explanation.
        text: String,
    },
    /// The server is shutting down; no new requests are sent.
    #[error("the server is going away")]
    GoingAway,
    /// The server sent something this client cannot make sense of; the
    /// connection is closed.
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
}

impl From<InvalidFrame> for ClientError {
    /// A frame from the server that does not decode: the server broke the
    /// protocol (a client never skips a bad frame, it closes).
    fn from(e: InvalidFrame) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

impl From<ConnectionError> for ClientError {
    fn from(e: ConnectionError) -> Self {
        let code = match &e {
            ConnectionError::ApplicationClosed(a) => u32::try_from(a.error_code.into_inner()).ok(),
            _ => None,
        };
        ClientError::Closed {
            code,
            reason: e.to_string(),
        }
    }
}

fn closed_of(conn: &Connection) -> ClientError {
    match conn.close_reason() {
        Some(e) => e.into(),
        None => ClientError::Closed {
            code: None,
            reason: "stream ended".into(),
        },
    }
}

/// Opens a QUIC connection to an accessd server (mutual TLS, ALPN
/// `accessd/1`), on a fresh local UDP socket.
pub async fn connect_quic(
    addr: SocketAddr,
    server_name: &str,
    tls: &TlsCredentials,
) -> Result<Connection, ClientError> {
    let endpoint = client_endpoint(addr)?;
    // The endpoint lives as long as a connection on it does.
    connect_on(&endpoint, &client_config(tls)?, addr, server_name).await
}

/// The client configuration [`connect_on`] takes: mutual TLS with
/// `tls`, and a keep-alive well inside the server's idle timeout.
pub fn client_config(tls: &TlsCredentials) -> Result<quinn::ClientConfig, ClientError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls.client_config()?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(10)));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A client endpoint on a fresh local UDP socket of `addr`'s family; many
/// connections may share it (one socket for many readers, as a gateway
/// or the load generator's `--sockets` do).
pub fn client_endpoint(addr: SocketAddr) -> Result<Endpoint, ClientError> {
    let bind: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    Endpoint::client(bind).map_err(|e| ClientError::Connect(e.to_string()))
}

/// Opens a connection to `addr` on `endpoint`.
pub async fn connect_on(
    endpoint: &Endpoint,
    config: &quinn::ClientConfig,
    addr: SocketAddr,
    server_name: &str,
) -> Result<Connection, ClientError> {
    let connecting = endpoint
        .connect_with(config.clone(), addr, server_name)
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    connecting
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))
}

enum Waiter {
    One(u32, oneshot::Sender<Result<ResponseFrame, ClientError>>),
    Batch(
        usize,
        oneshot::Sender<Result<Vec<ResponseFrame>, ClientError>>,
    ),
    Ping(u64, oneshot::Sender<Result<(), ClientError>>),
}

impl Waiter {
    fn fail(self, e: ClientError) {
        // The caller may have given up (dropped its future): ignore.
        let _ = match self {
            Waiter::One(_, tx) => tx.send(Err(e)).is_ok(),
            Waiter::Batch(_, tx) => tx.send(Err(e)).is_ok(),
            Waiter::Ping(_, tx) => tx.send(Err(e)).is_ok(),
        };
    }
}

enum Cmd {
    Send(Vec<u8>, Waiter),
    Finish,
}

struct Shared {
    pending: Mutex<VecDeque<Waiter>>,
    going_away: AtomicBool,
    finish_sent: AtomicBool,
    /// Signalled whenever the last pending request is answered or failed,
    /// for [`Client::close`] to wait on.
    drained: tokio::sync::Notify,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiter>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail_all(&self, e: &ClientError) {
        let waiters: Vec<_> = self.pending().drain(..).collect();
        for w in waiters {
            w.fail(e.clone());
        }
        self.drained.notify_waiters();
    }

    /// The next pending request, in the order they were sent.
    fn next_waiter(&self) -> Option<Waiter> {
        let mut pending = self.pending();
        let waiter = pending.pop_front();
        if pending.is_empty() {
            self.drained.notify_waiters();
        }
        waiter
    }
}

/// A connection to an accessd server, shareable between tasks (`&self`
/// methods). Dropping it closes the connection.
pub struct Client {
    conn: Connection,
    tx: mpsc::UnboundedSender<Cmd>,
    next_id: AtomicU32,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("remote", &self.conn.remote_address())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects and opens the request stream.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        tls: &TlsCredentials,
    ) -> Result<Self, ClientError> {
        let conn = connect_quic(addr, server_name, tls).await?;
        let (send, recv) = conn.open_bi().await?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(VecDeque::new()),
            going_away: AtomicBool::new(false),
            finish_sent: AtomicBool::new(false),
            drained: tokio::sync::Notify::new(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(send, rx, shared.clone()));
        tokio::spawn(reader(recv, conn.clone(), tx.clone(), shared.clone()));
        Ok(Self {
            conn,
            tx,
            next_id: AtomicU32::new(1),
            shared,
        })
    }

    fn id(&self) -> u32 {
        // 0 is reserved ("no request") in error frames.
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    fn submit(&self, bytes: Vec<u8>, waiter: Waiter) -> Result<(), ClientError> {
        if self.shared.going_away.load(Ordering::Acquire) {
            return Err(ClientError::GoingAway);
        }
        self.tx
            .send(Cmd::Send(bytes, waiter))
            .map_err(|_| closed_of(&self.conn))
    }

    /// Asks for one decision.
    pub async fn decide(&self, request: &Request<'_>) -> Result<ResponseFrame, ClientError> {
        self.decide_at(request, None).await
    }

    /// Asks for one decision, passing the reader's clock along
    /// (informational: the server decides on its own clock).
    pub async fn decide_at(
        &self,
        request: &Request<'_>,
        reader_time_ms: Option<i64>,
    ) -> Result<ResponseFrame, ClientError> {
        let id = self.id();
        let mut bytes = Vec::with_capacity(64);
        encode_request(
            &mut bytes,
            &RequestFrame {
                request_id: id,
                reader: request.reader,
                credential: request.credential,
                pin: request.pin,
                reader_time_ms,
            },
        )?;
        let (tx, rx) = oneshot::channel();
        self.submit(bytes, Waiter::One(id, tx))?;
        rx.await.map_err(|_| closed_of(&self.conn))?
    }

    /// Asks for 1 to [`MAX_BATCH`](crate::MAX_BATCH) decisions in one
    /// frame; the answers come back in request order.
    pub async fn decide_batch(
        &self,
        requests: &[Request<'_>],
    ) -> Result<Vec<ResponseFrame>, ClientError> {
        let frames: Vec<RequestFrame<'_>> = requests
            .iter()
            .map(|r| RequestFrame {
                request_id: self.id(),
                reader: r.reader,
                credential: r.credential,
                pin: r.pin,
                reader_time_ms: None,
            })
            .collect();
        let mut bytes = Vec::with_capacity(64 * frames.len());
        encode_batch_request(&mut bytes, &frames)?;
        let (tx, rx) = oneshot::channel();
        self.submit(bytes, Waiter::Batch(frames.len(), tx))?;
        let answers = rx.await.map_err(|_| closed_of(&self.conn))??;
        // Fail closed if the server's answers do not line up with ours.
        if answers
            .iter()
            .zip(&frames)
            .any(|(a, f)| a.request_id != f.request_id)
        {
            return Err(ClientError::Protocol("batch answers out of order".into()));
        }
        Ok(answers)
    }

    /// Round trip of a ping frame.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let nonce = fastrand_u64();
        let mut bytes = Vec::with_capacity(12);
        encode_ping_frame(&mut bytes, nonce);
        let (tx, rx) = oneshot::channel();
        let start = std::time::Instant::now();
        self.submit(bytes, Waiter::Ping(nonce, tx))?;
        rx.await.map_err(|_| closed_of(&self.conn))??;
        Ok(start.elapsed())
    }

    /// Opens another stream for raw, pipelined use.
    pub async fn pipeline(&self) -> Result<Pipeline, ClientError> {
        let (send, recv) = self.conn.open_bi().await?;
        Ok(Pipeline::new(send, recv))
    }

    /// The underlying QUIC connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Waits for the connection to close and tells why.
    pub async fn closed(&self) -> ClientError {
        self.conn.closed().await.into()
    }

    /// Finishes the request stream once every answer is in, then closes
    /// the connection with [`close::NO_ERROR`].
    pub async fn close(self) {
        let _ = self.tx.send(Cmd::Finish);
        // The reader ends when the server finishes its side.
        let waited = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                // Registered before the check, so that a signal between the
                // check and the wait is not lost.
                let drained = self.shared.drained.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                if self.shared.pending().is_empty() {
                    return;
                }
                drained.await;
            }
        })
        .await;
        if waited.is_err() {
            self.shared.fail_all(&ClientError::Closed {
                code: Some(close::NO_ERROR),
                reason: "client closed".into(),
            });
        }
        self.conn
            .close(VarInt::from_u32(close::NO_ERROR), b"client closing");
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.conn
            .close(VarInt::from_u32(close::NO_ERROR), b"client dropped");
    }
}

fn fastrand_u64() -> u64 {
    // A nonce only has to differ between pings in flight.
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now())
}

async fn writer(mut send: SendStream, mut rx: mpsc::UnboundedReceiver<Cmd>, shared: Arc<Shared>) {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut finish = false;
    while let Some(cmd) = rx.recv().await {
        buf.clear();
        let mut cmd = Some(cmd);
        // Coalesce whatever is queued into one write: this is what makes
        // pipelining cheap (many frames per QUIC packet).
        while let Some(c) = cmd.take() {
            match c {
                Cmd::Send(bytes, waiter) => {
                    buf.extend_from_slice(&bytes);
                    // Registered before the bytes leave, so an answer can
                    // never arrive before its waiter.
                    shared.pending().push_back(waiter);
                }
                Cmd::Finish => finish = true,
            }
            if buf.len() < 64 * 1024 && !finish {
                cmd = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() && send.write_all(&buf).await.is_err() {
            // The reader sees the stream die and fails the waiters.
            return;
        }
        if finish {
            let _ = send.finish();
            return;
        }
    }
    let _ = send.finish();
}

async fn reader(
    mut recv: RecvStream,
    conn: Connection,
    tx: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
) {
    let mut chunk = ReadBuf::default();
    let mut frames = FrameReader::default();
    let err = loop {
        let n = match recv.read(chunk.for_read()).await {
            Ok(Some(n)) => n,
            Ok(None) => break closed_of(&conn),
            Err(e) => {
                break match e {
                    quinn::ReadError::ConnectionLost(c) => c.into(),
                    other => ClientError::Closed {
                        code: None,
                        reason: other.to_string(),
                    },
                };
            }
        };
        let result = frames.feed(chunk.got(n), |item| dispatch(item?, &shared));
        if let Err(e) = result {
            conn.close(
                VarInt::from_u32(close::PROTOCOL_ERROR),
                e.to_string().as_bytes(),
            );
            break e;
        }
        if shared.going_away.load(Ordering::Acquire)
            && shared.pending().is_empty()
            && !shared.finish_sent.swap(true, Ordering::AcqRel)
        {
            let _ = tx.send(Cmd::Finish);
        }
    };
    shared.fail_all(&err);
}

fn dispatch(frame: Frame<'_>, shared: &Shared) -> Result<(), ClientError> {
    if let Frame::Error(e) = &frame
        && e.code == ErrorCode::GOING_AWAY
    {
        shared.going_away.store(true, Ordering::Release);
        return Ok(());
    }
    let Some(waiter) = shared.next_waiter() else {
        return Err(ClientError::Protocol(format!(
            "unsolicited {:?} frame",
            frame.frame_type()
        )));
    };
    match (frame, waiter) {
        (Frame::Response(r), Waiter::One(id, tx)) if r.request_id == id => {
            let _ = tx.send(Ok(r));
        }
        (Frame::BatchResponse(b), Waiter::Batch(n, tx)) if b.len() == n => {
            let _ = tx.send(Ok(b.iter().collect()));
        }
        (Frame::Pong(got), Waiter::Ping(nonce, tx)) if got == nonce => {
            let _ = tx.send(Ok(()));
        }
        (Frame::Error(e), w) => w.fail(ClientError::Server {
            code: e.code,
            text: e.text.to_owned(),
        }),
        (frame, w) => {
            let e = ClientError::Protocol(format!(
                "{:?} frame does not answer the oldest request",
                frame.frame_type()
            ));
            w.fail(e.clone());
            return Err(e);
        }
    }
    Ok(())
}

/// A raw request stream: queue frames, flush them in one write, read
/// answers as they come. No background task; one owner. Used by the load
/// generator and by tests that need to send exact bytes.
#[derive(Debug)]
pub struct Pipeline {
    send: SendStream,
    recv: RecvStream,
    out: Vec<u8>,
    frames: FrameReader,
    chunk: ReadBuf,
}

impl Pipeline {
    /// Wraps an open bidirectional stream.
    pub fn new(send: SendStream, recv: RecvStream) -> Self {
        Self {
            send,
            recv,
            out: Vec::with_capacity(16 * 1024),
            frames: FrameReader::default(),
            chunk: ReadBuf::default(),
        }
    }

    /// Queues a request frame.
    pub fn queue(&mut self, request: &RequestFrame<'_>) -> Result<(), EncodeError> {
        encode_request(&mut self.out, request)
    }

    /// Queues a batch request frame.
    pub fn queue_batch(&mut self, requests: &[RequestFrame<'_>]) -> Result<(), EncodeError> {
        encode_batch_request(&mut self.out, requests)
    }

    /// Queues bytes as they are (to test how a server takes bad input).
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.out.len()
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.send.write_all(&self.out).await;
        self.out.clear();
        r.map_err(|e| ClientError::Closed {
            code: None,
            reason: e.to_string(),
        })
    }

    /// Finishes the sending side (the server then finishes its side once
    /// every frame is answered).
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }

    /// Reads once from the stream and calls `each` for every complete frame
    /// that arrived. Returns `false` once the server finished the stream.
    /// Cancel-safe: no frame is lost if the future is dropped.
    pub async fn read(&mut self, mut each: impl FnMut(Frame<'_>)) -> Result<bool, ClientError> {
        let n = match self.recv.read(self.chunk.for_read()).await {
            Ok(Some(n)) => n,
            Ok(None) => {
                if self.frames.buffered() == 0 {
                    return Ok(false);
                }
                return Err(ClientError::Protocol("stream ended inside a frame".into()));
            }
            Err(quinn::ReadError::ConnectionLost(e)) => return Err(e.into()),
            Err(e) => {
                return Err(ClientError::Closed {
                    code: None,
                    reason: e.to_string(),
                });
            }
        };
        let fresh = self.chunk.got(n);
        self.frames.feed(fresh, |item| {
            each(item?);
            Ok::<(), ClientError>(())
        })?;
        Ok(true)
    }
}
