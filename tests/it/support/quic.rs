//! A real accessd QUIC server on 127.0.0.1 for tests, with generated
//! certificates. Used by `quic.rs` and by any test that needs to ask a
//! running server (the DynamoDB tests publish into the same
//! [`SharedSnapshot`] the server reads).
//!
//! ```ignore
//! let snapshot = Arc::new(SharedSnapshot::new(my_snapshot));
//! let server = start_server(snapshot.clone()).await;
//! let client = server.gateway().await;            // may ask for every reader
//! let answer = client.decide(&request).await?;
//! snapshot.store(Arc::new(newer));               // the next answer sees it
//! server.shutdown().await;                       // graceful; returns when done
//! ```
//!
//! The server decides on the wall clock unless a test pins it with
//! [`TestServer::set_now`] (schedules and validity need a fixed instant).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use accessd_engine::{Reason, SharedSnapshot};
use accessd_protocol::{
    Answer, Asked, Client, Decider, DevCa, Journal, Limits, SAN_ALL_READERS, SnapshotDecider,
    TlsCredentials,
};
use jiff::Timestamp;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// The test PKI: one CA, the server's credentials, and a gateway client.
pub(crate) struct TestCerts {
    /// The CA that signs everything here.
    pub(crate) ca: DevCa,
    /// The server's credentials (name `localhost`).
    pub(crate) server: TlsCredentials,
    /// A client that may ask for every reader.
    pub(crate) gateway: TlsCredentials,
}

impl TestCerts {
    pub(crate) fn new() -> Self {
        let ca = DevCa::new("test CA").unwrap();
        let server = ca.credentials(&ca.server(&["localhost"]).unwrap()).unwrap();
        let gateway = ca
            .credentials(&ca.client("gateway", &[SAN_ALL_READERS.to_owned()]).unwrap())
            .unwrap();
        Self {
            ca,
            server,
            gateway,
        }
    }

    /// A client certificate with these URI SANs, signed by the test CA.
    pub(crate) fn client(&self, uris: &[&str]) -> TlsCredentials {
        let uris: Vec<String> = uris.iter().map(|u| (*u).to_owned()).collect();
        self.ca
            .credentials(&self.ca.client("test client", &uris).unwrap())
            .unwrap()
    }
}

/// The server's own decider ([`SnapshotDecider`]) with a clock the test
/// can pin and a counter the test can await.
pub(crate) struct TestDecider {
    inner: SnapshotDecider,
    /// Milliseconds since the epoch; `i64::MIN` means the wall clock.
    now_ms: Arc<AtomicI64>,
    calls: AtomicU64,
    called: Notify,
}

impl TestDecider {
    fn new(snapshot: Arc<SharedSnapshot>) -> Self {
        let now_ms = Arc::new(AtomicI64::new(i64::MIN));
        let clock = Arc::clone(&now_ms);
        Self {
            inner: SnapshotDecider::new(snapshot).with_clock(move || {
                match clock.load(Ordering::Relaxed) {
                    i64::MIN => Timestamp::now(),
                    ms => Timestamp::from_millisecond(ms).unwrap(),
                }
            }),
            now_ms,
            calls: AtomicU64::new(0),
            called: Notify::new(),
        }
    }

    /// Requests decided so far.
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Acquire)
    }

    /// Waits until at least `n` requests have been decided.
    pub(crate) async fn wait_for_calls(&self, n: u64) {
        loop {
            let notified = self.called.notified();
            if self.calls() >= n {
                return;
            }
            notified.await;
        }
    }
}

impl Decider for TestDecider {
    type Chunk = <SnapshotDecider as Decider>::Chunk;

    fn begin(&self) -> Self::Chunk {
        self.inner.begin()
    }

    fn decide(&self, chunk: &Self::Chunk, asked: &Asked<'_>, journal: &mut Journal) -> Answer {
        let answer = self.inner.decide(chunk, asked, journal);
        self.calls.fetch_add(1, Ordering::AcqRel);
        self.called.notify_waiters();
        answer
    }

    fn refuse(
        &self,
        chunk: &Self::Chunk,
        asked: &Asked<'_>,
        reason: Reason,
        journal: &mut Journal,
    ) -> Answer {
        self.inner.refuse(chunk, asked, reason, journal)
    }

    fn commit(&self, journal: &mut Journal) {
        self.inner.commit(journal);
    }
}

/// A running server. Dropping it without [`TestServer::shutdown`] aborts it.
pub(crate) struct TestServer {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its PKI; make more clients with `certs.client(..)`.
    pub(crate) certs: TestCerts,
    /// What it decides on.
    pub(crate) decider: Arc<TestDecider>,
    /// Its QUIC endpoints.
    pub(crate) endpoints: accessd_protocol::Endpoints,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Pins the server's clock.
    pub(crate) fn set_now(&self, now: Timestamp) {
        self.decider
            .now_ms
            .store(now.as_millisecond(), Ordering::Relaxed);
    }

    /// A connected client that may ask for every reader.
    pub(crate) async fn gateway(&self) -> Client {
        self.connect(&self.certs.gateway).await.unwrap()
    }

    /// Connects with the given credentials.
    pub(crate) async fn connect(
        &self,
        tls: &TlsCredentials,
    ) -> Result<Client, accessd_protocol::ClientError> {
        Client::connect(self.addr, "localhost", tls).await
    }

    /// Starts a graceful shutdown without waiting for it.
    pub(crate) fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down gracefully and waits until the server has stopped.
    pub(crate) async fn shutdown(mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts a server on 127.0.0.1 (a free port) with fresh certificates,
/// deciding on whatever `snapshot` holds at each request.
pub(crate) async fn start_server(snapshot: Arc<SharedSnapshot>) -> TestServer {
    start_server_with(snapshot, Limits::default()).await
}

/// [`start_server`] with other limits.
pub(crate) async fn start_server_with(snapshot: Arc<SharedSnapshot>, limits: Limits) -> TestServer {
    start_server_on(snapshot, limits, 1).await
}

/// [`start_server_with`] on `endpoints` endpoints sharing the port.
pub(crate) async fn start_server_on(
    snapshot: Arc<SharedSnapshot>,
    limits: Limits,
    endpoints: usize,
) -> TestServer {
    let certs = TestCerts::new();
    let endpoint = accessd_protocol::bind_endpoints(
        ([127, 0, 0, 1], 0).into(),
        &certs.server,
        &limits,
        endpoints,
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let handle = endpoint.clone();
    let decider = Arc::new(TestDecider::new(snapshot));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(accessd_protocol::run(
        endpoint,
        decider.clone(),
        limits,
        async {
            let _ = stopped.await;
        },
    ));
    TestServer {
        addr,
        certs,
        decider,
        endpoints: handle,
        stop: Some(stop),
        task: Some(task),
    }
}
