//! The operator's face: one HTTP listener (axum) with probes (`/healthz`,
//! `/readyz`), Prometheus `/metrics`, `/v1/status`, and the JSON decide
//! and explain API (`/v1/decide`, `/v1/explain`, see [`api`]).
//!
//! ```text
//!  GET  /healthz      open    the process answers
//!  GET  /readyz       open    200 when decisions come from data, else 503 + why
//!  GET  /metrics      token   Prometheus text
//!  GET  /v1/status    token   JSON: version, source, snapshot, checkpoint, events, connections
//!  POST /v1/decide    token   one request or a batch → the QUIC protocol's answers
//!  POST /v1/explain   token   the same, with the combining rule's trace
//!  POST /v1/reload    token   loopback only: certificates and the site file
//!  GET  /ui/          open    the web console (see [`console`]), whose data
//!                             comes from /v1/status, /v1/explain, /v1/live,
//!                             /v1/readers, /v1/holders/{id}, /v1/cards/{card}
//! ```
//!
//! "token": when `--http-token-file` is given, these need `Authorization:
//! Bearer TOKEN` (compared in constant time). Binding anything but a
//! loopback address without a token file is refused at start: the
//! listener is never open by accident. The probes stay open so an
//! orchestrator can use them; they say no more than ready or not.
//!
//! Everything answers from the same [`SnapshotDecider`] the QUIC server
//! uses, so the staleness policy and `not_ready` apply alike.

mod api;
mod console;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use accessd_engine::Reason;
use accessd_loader::Source;
use accessd_protocol::SnapshotDecider;
use anyhow::{Context, bail};
use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use subtle::ConstantTimeEq;

/// Where the HTTP listener binds, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HttpAddr(pub(crate) Option<SocketAddr>);

impl FromStr for HttpAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            return Ok(Self(None));
        }
        s.parse()
            .map(|a| Self(Some(a)))
            .map_err(|e| format!("`{s}` is not an address like 127.0.0.1:9000, or `off`: {e}"))
    }
}

/// The HTTP options of `accessd serve`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct HttpArgs {
    /// TCP address of the HTTP listener (probes, metrics, status, the
    /// decide and explain API), or `off`. An address other than loopback
    /// needs --http-token-file. `--metrics-addr` is an old name for it.
    #[arg(long, alias = "metrics-addr", default_value = "127.0.0.1:9000")]
    pub(crate) http_addr: HttpAddr,
    /// A file holding the bearer token HTTP clients must send
    /// (`Authorization: Bearer TOKEN`) for everything but the probes.
    /// Surrounding whitespace is ignored; at least 16 characters.
    #[arg(long)]
    pub(crate) http_token_file: Option<PathBuf>,
}

/// The bearer token.
struct Token(Vec<u8>);

impl Token {
    const MIN_LEN: usize = 16;

    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the HTTP token file `{}`", path.display()))?;
        let token = text.trim();
        if token.len() < Self::MIN_LEN || token.chars().any(char::is_whitespace) {
            bail!(
                "the HTTP token in `{}` must be one word of at least {} characters",
                path.display(),
                Self::MIN_LEN
            );
        }
        Ok(Self(token.as_bytes().to_vec()))
    }

    /// Whether the `Authorization` header carries this token.
    fn admits(&self, header: Option<&HeaderValue>) -> bool {
        let Some(value) = header.map(HeaderValue::as_bytes) else {
            return false;
        };
        let Some(given) = value.strip_prefix(b"Bearer ") else {
            return false;
        };
        // Constant time in the token's content (its length is no secret).
        bool::from(given.ct_eq(&self.0))
    }
}

/// A bound HTTP listener, not yet serving.
pub(crate) struct HttpListener {
    listener: tokio::net::TcpListener,
    token: Option<Token>,
}

impl HttpListener {
    /// Binds `args.http_addr` (`None` when `off`), after checking the rule:
    /// beyond loopback only with a token file.
    pub(crate) async fn bind(args: &HttpArgs) -> anyhow::Result<Option<Self>> {
        let Some(addr) = args.http_addr.0 else {
            return Ok(None);
        };
        let token = match &args.http_token_file {
            Some(path) => Some(Token::read(path)?),
            None if addr.ip().is_loopback() => None,
            None => bail!(
                "refusing to serve HTTP on `{addr}` without authentication: bind a loopback \
                 address (--http-addr 127.0.0.1:9000) or give --http-token-file FILE"
            ),
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on `{addr}`"))?;
        Ok(Some(Self { listener, token }))
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and lets
    /// requests in flight finish.
    pub(crate) async fn run(
        self,
        view: ServerView,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let state = Arc::new(HttpState {
            view,
            token: self.token,
        });
        let upkeep = state.view.metrics.clone();
        let upkeep = tokio::spawn(async move {
            // Histograms are drained into their summaries here (the
            // exporter's own listener did this; a scrape does it too).
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                upkeep.run_upkeep();
            }
        });
        tracing::info!(
            authenticated = state.token.is_some(),
            "HTTP: /healthz /readyz /metrics /v1/status /v1/decide /v1/explain /v1/reload /v1/live /v1/readers /v1/holders /v1/cards /ui/"
        );
        let app = router(Arc::clone(&state));
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "HTTP listener failed");
        }
        upkeep.abort();
    }
}

/// What the HTTP face reads of the running server.
pub(crate) struct ServerView {
    /// The decider the QUIC server uses.
    pub(crate) decider: Arc<SnapshotDecider>,
    /// The Prometheus recorder's handle.
    pub(crate) metrics: PrometheusHandle,
    /// When `serve` started.
    pub(crate) started: Instant,
    /// Where the data comes from.
    pub(crate) source: SourceView,
    /// The checkpoint file, if any.
    pub(crate) checkpoint: Option<PathBuf>,
    /// The access-event trail, when events are recorded.
    pub(crate) events: Option<crate::cmd::events::TrailView>,
    /// QUIC connections open now.
    pub(crate) connections: Box<dyn Fn() -> usize + Send + Sync>,
    /// The QUIC address served.
    pub(crate) quic_addr: Option<SocketAddr>,
    /// Reloads certificates and the site file.
    pub(crate) reloader: Arc<crate::reload::Reloader>,
}

/// Where the data comes from.
pub(crate) enum SourceView {
    /// A site file.
    SiteFile(PathBuf),
    /// A DynamoDB table followed through its stream.
    DynamoDb {
        /// The table.
        table: String,
        /// The running source.
        source: Arc<Source>,
    },
}

struct HttpState {
    view: ServerView,
    token: Option<Token>,
}

fn router(state: Arc<HttpState>) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/decide", post(api::decide))
        .route("/v1/explain", post(api::explain))
        .route("/v1/reload", post(reload))
        .route("/v1/live", get(console::live))
        .route("/v1/readers", get(console::readers))
        .route("/v1/holders/{id}", get(console::holder))
        .route("/v1/cards/{card}", get(console::card))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(console::to_console))
        .route("/ui", get(console::to_console))
        .route("/ui/", get(console::index))
        .route("/ui/app.js", get(console::app_js))
        .route("/ui/style.css", get(console::style_css))
        .merge(guarded)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(count))
        .with_state(state)
}

async fn authenticate(
    State(state): State<Arc<HttpState>>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    match &state.token {
        Some(token) if !token.admits(request.headers().get(header::AUTHORIZATION)) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({ "error": "missing or wrong bearer token" })),
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

async fn count(request: axum::extract::Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics::counter!(
        crate::telemetry::HTTP_REQUESTS,
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "no such route; see docs/operations.md" })),
    )
        .into_response()
}

async fn healthz() -> Response {
    Json(json!({ "alive": true })).into_response()
}

async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let r = state.view.decider.readiness();
    let mut body = serde_json::Map::new();
    body.insert("ready".into(), json!(r.is_ready()));
    body.insert("snapshot_version".into(), json!(r.version));
    body.insert("snapshot_age_ms".into(), json!(r.age_ms));
    body.insert("max_staleness_ms".into(), json!(r.max_age_ms));
    match r.refusal {
        None => (StatusCode::OK, Json(body)).into_response(),
        Some(reason) => {
            let detail = match reason {
                Reason::NotReady => "no data loaded yet: every decision is not_ready".to_owned(),
                _ => format!(
                    "the data was last confirmed current {} ms ago, more than --max-staleness \
                     allows: every decision is {reason}",
                    r.age_ms
                ),
            };
            body.insert("reason".into(), json!(reason.as_str()));
            body.insert("detail".into(), json!(detail));
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// `POST /v1/reload`, from loopback only: reloads the TLS files and the
/// site file; 200 when nothing was refused, else 422 (what was refused
/// keeps its old version serving).
async fn reload(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if !peer.ip().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({ "error": "reload is allowed from loopback only" })),
        )
            .into_response();
    }
    let reloader = Arc::clone(&state.view.reloader);
    match tokio::task::spawn_blocking(move || reloader.reload("POST /v1/reload")).await {
        Ok(report) => {
            let refused = matches!(report.tls, crate::reload::Outcome::Refused { .. })
                || matches!(report.site, Some(crate::reload::Outcome::Refused { .. }));
            let status = if refused {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            };
            (status, Json(report)).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": format!("reload failed: {e}") })),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    let handle = &state.view.metrics;
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

async fn status(State(state): State<Arc<HttpState>>) -> Response {
    let view = &state.view;
    let shared = view.decider.snapshot();
    let snapshot = shared.load();
    let readiness = view.decider.readiness();
    let source = match &view.source {
        SourceView::SiteFile(path) => json!({ "kind": "site_file", "path": path }),
        SourceView::DynamoDb { table, source } => {
            let stats = source.stats();
            json!({
                "kind": "dynamodb",
                "table": table,
                "state": source.status(),
                "last_sequence": source.last_sequence(),
                "stream_records_applied": stats.applied(),
                "items_rejected": stats.rejected(),
                "items_scanned": stats.scanned(),
                "bootstraps": stats.bootstraps(),
                "stream_lag_s": stats.stream_lag_seconds(),
                "shards": stats.shard_positions(),
                "shard_lag_s": stats.shard_lag_seconds(),
            })
        }
    };
    let checkpoint = match &view.checkpoint {
        None => serde_json::Value::Null,
        Some(path) => match tokio::fs::metadata(path).await {
            Ok(meta) => json!({
                "path": path,
                "exists": true,
                "bytes": meta.len(),
                "written_at": meta
                    .modified()
                    .ok()
                    .and_then(|t| Timestamp::try_from(t).ok()),
            }),
            Err(_) => json!({ "path": path, "exists": false }),
        },
    };
    let body = json!({
        "accessd_version": env!("CARGO_PKG_VERSION"),
        "uptime_s": view.started.elapsed().as_secs_f64(),
        "ready": readiness.is_ready(),
        "refusal": readiness.refusal.map(Reason::as_str),
        "max_staleness_ms": readiness.max_age_ms,
        "source": source,
        "snapshot": {
            "version": snapshot.version(),
            "as_of": snapshot.as_of(),
            "fresh_as_of": shared.fresh_as_of(&snapshot),
            "age_ms": readiness.age_ms,
            "stats": snapshot.stats(),
        },
        "checkpoint": checkpoint,
        "events": view.events.as_ref().map(crate::cmd::events::TrailView::status),
        "decisions": {
            "stats": accessd_protocol::stats::STATS.read(),
            "service_time_bounds_us": accessd_protocol::stats::bucket_bounds_us(),
        },
        "quic": {
            "addr": view.quic_addr,
            "connections": (view.connections)(),
        },
    });
    Json(body).into_response()
}
