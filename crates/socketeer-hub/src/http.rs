//! The hub's HTTP side (axum): the JSON API, CSV export, `/metrics`, the live feed (SSE) and
//! `POST /api/ingest`. Every answer is a store read (typed, see `store::reads`) serialised
//! here: no SQL in this file. Reads take turns, a few at once.
//!
//! Beyond loopback every request needs the token (`Authorization: Bearer TOKEN` or
//! `?token=TOKEN`); on loopback it is needed only when one was given.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::live::{Committed, Lane, StreamKey};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::ingest::Ingest;
use crate::ingest::session::{Answers, BATCH, Session, Step, Who};
use crate::record::ImageFormat;
use crate::record::MAX_LINE;
use crate::store::{
    Cell, DetectionQuery, ExportQuery, ExportRow, FrameQuery, ImageQuery, SeriesPoints,
    SeriesQuery, StoreError, now_secs,
};
use crate::wire::{Answer, Reason, Refusal};

/// A device is shown online this long after its last record, even without a connection (UDP
/// and HTTP senders have none).
const ONLINE_WINDOW: f64 = 10.0;
/// Events a live viewer may fall behind before it is dropped.
const VIEWER_QUEUE: usize = 1024;
/// Most points one series query returns (buckets past that).
const MAX_POINTS: usize = 10_000;
/// Most frames one detections query returns.
const MAX_FRAMES: usize = 1000;
/// Most detections one detections query returns (past it the answer says it is truncated).
const MAX_DETECTIONS: usize = 10_000;
/// Most frames one frames query lists.
const MAX_FRAME_LIST: usize = 10_000;
/// Most rows one CSV export holds.
const MAX_CSV_ROWS: usize = 1_000_000;
/// Largest `POST /api/ingest` body.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// What the handlers share.
pub(crate) struct Api {
    pub(crate) ingest: Arc<Ingest>,
    pub(crate) activity: Arc<crate::store::Activity>,
    pub(crate) live: broadcast::Sender<Arc<Committed>>,
    pub(crate) token: Option<String>,
    pub(crate) shutdown: socketeer::Shutdown,
    /// `--allow`/`--deny`, as on every other endpoint of the hub.
    pub(crate) access: socketeer::AccessList,
    /// Wrong tokens by address (a few, then a wait).
    pub(crate) token_failures: TokenFailures,
    /// The listener's own counters.
    pub(crate) web: Arc<crate::web::Counters>,
    /// `--http-ingest-no-auth`: `POST /api/ingest` without a token.
    pub(crate) ingest_no_auth: bool,
    /// `--http-host` names (lower case).
    pub(crate) hosts: Vec<String>,
    /// Turns for database queries and exports, a few at once.
    pub(crate) queries: Arc<tokio::sync::Semaphore>,
    /// Turns for ingest bodies, a few at once.
    pub(crate) uploads: Arc<tokio::sync::Semaphore>,
    /// How long an ingest body may take to arrive (and a WebSocket message to be sent).
    pub(crate) body_deadline: std::time::Duration,
    /// The Foxglove WebSocket's channels and session.
    pub(crate) foxglove: Arc<crate::foxglove::Channels>,
    /// Every stream's newest record, for a viewer that arrives.
    pub(crate) newest: Arc<crate::live::Newest>,
    /// The bus to other nodes, if any.
    #[cfg(feature = "nats")]
    pub(crate) bus: Option<Arc<crate::bus::Bus>>,
}

/// Queries (and exports) run at once; more wait their turn.
pub(crate) const QUERIES_AT_ONCE: usize = 4;
/// Ingest bodies read at once; more wait their turn.
pub(crate) const UPLOADS_AT_ONCE: usize = 4;
/// How long a request waits for its turn before it is told to come back.
const TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A turn from `turns`, waiting at most [`TURN_WAIT`]. It is given back when dropped, which
/// may be in a blocking thread that outlives the request.
async fn wait_turn(
    turns: &Arc<tokio::sync::Semaphore>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    tokio::time::timeout(TURN_WAIT, Arc::clone(turns).acquire_owned())
        .await
        .ok()?
        .ok()
}

/// 503 with when to come back: every turn of this kind is taken.
fn busy(what: &str) -> Response {
    let mut response = bad(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("too many {what} at once; try again in a moment"),
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    response
}

type Shared = State<Arc<Api>>;

/// The routes.
pub(crate) fn router(api: Arc<Api>) -> Router {
    let shared = Arc::clone(&api);
    Router::new()
        .route("/api/devices", get(devices))
        .route("/api/streams", get(streams))
        .route("/api/series", get(series))
        .route("/api/detections", get(detections))
        .route("/api/export.csv", get(export_csv))
        .route("/api/export.mcap", get(export_mcap))
        .route("/api/live", get(live))
        .route("/foxglove", get(crate::foxglove::upgrade))
        .route("/api/ingest", post(ingest))
        .route("/api/ingest/image", post(ingest_image))
        .route("/api/frames", get(frames))
        .route("/api/frame", get(frame))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&api),
            require_token,
        ))
        .with_state(api)
        // The dashboard's files hold no data: served without the token (the page passes the
        // `?token=` it was opened with on to the API).
        .route(
            "/",
            get(|| asset("text/html; charset=utf-8", DASHBOARD_HTML)),
        )
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", DASHBOARD_JS)),
        )
        .route(
            "/app.css",
            get(|| asset("text/css; charset=utf-8", DASHBOARD_CSS)),
        )
        // Outermost, so the token's refusal and unknown paths are JSON too.
        .layer(axum::middleware::from_fn(json_errors))
        // Requests a web page made on someone's behalf, or through a rebound DNS name.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            same_site,
        ))
        // Before anything: who may connect at all.
        .layer(axum::middleware::from_fn_with_state(shared, check_access))
}

/// `--allow`/`--deny` for the HTTP listener: a peer they refuse gets 403 and nothing else.
async fn check_access(
    State(api): Shared,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if api.access.permits(&socketeer::PeerAddr::Inet(peer)) {
        return next.run(request).await;
    }
    bad(
        StatusCode::FORBIDDEN,
        "this address is not allowed here (--allow/--deny)",
    )
}

/// Refuses what a web page may make a browser send without the user meaning to:
///
/// - while no token is required (loopback), a `Host` that is neither an IP address,
///   `localhost`, nor a `--http-host` name: a DNS name rebound to 127.0.0.1 (421);
/// - a request that changes something (not GET/HEAD) from another origin (`Origin` not this
///   host, or `Sec-Fetch-Site: cross-site`) (403).
async fn same_site(
    State(api): Shared,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).to_ascii_lowercase());
    if api.token.is_none() {
        if let Some(host) = &host {
            if !known_host(host, &api.hosts) {
                return bad(
                    StatusCode::MISDIRECTED_REQUEST,
                    format!(
                        "this hub does not answer to the host name {host:?} (a page may have \
                         rebound its name to this address); to use that name, start the hub \
                         with --http-host NAME"
                    ),
                );
            }
        }
    }
    // Any web page may open a WebSocket to any address (no CORS protects what it reads):
    // without a token, only this hub's own pages and the Foxglove app may.
    let websocket = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if websocket && api.token.is_none() {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = String::from_utf8_lossy(origin.as_bytes()).to_ascii_lowercase();
            let own = host
                .as_ref()
                .is_some_and(|host| origin == format!("http://{host}"));
            if !own && !crate::foxglove::APP_ORIGINS.contains(&origin.as_str()) {
                return bad(
                    StatusCode::FORBIDDEN,
                    format!(
                        "a WebSocket from the web page at {origin:?} is refused: without a \
                         token only this hub's pages and the Foxglove app may open one (start \
                         the hub with --http-token and connect with ?token=)"
                    ),
                );
            }
        }
    }
    let changes = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if changes {
        let origin = headers.get(header::ORIGIN).map(|o| o.as_bytes());
        let same_origin = match (origin, &host) {
            (None, _) => true,
            (Some(origin), Some(host)) => {
                origin.eq_ignore_ascii_case(format!("http://{host}").as_bytes())
            }
            (Some(_), None) => false,
        };
        let cross_site = headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"cross-site");
        if !same_origin || cross_site {
            return bad(
                StatusCode::FORBIDDEN,
                "a request from another web site is refused",
            );
        }
    }
    next.run(request).await
}

/// Whether a `Host` header (lower case, with its port) names this hub: an IP address,
/// `localhost` (or a name under it), or one the operator gave.
fn known_host(host: &str, hosts: &[String]) -> bool {
    // "[::1]:8080", "127.0.0.1:8080", "name:8080", or without the port.
    let name = match host.strip_prefix('[') {
        Some(rest) => {
            return rest
                .split(']')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || hosts.iter().any(|h| h == name)
}

const DASHBOARD_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/app.js");
const DASHBOARD_CSS: &str = include_str!("dashboard/app.css");

/// One of the dashboard's files, with headers that keep anything a device sent from running
/// as script even if it reached the page as markup: only the page's own script may run.
async fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self'; style-src 'self'; \
                 img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Wrong tokens an address may send in a row before it must wait [`TOKEN_LOCKOUT`].
const TOKEN_TRIES: u32 = 5;
/// How long an address that sent [`TOKEN_TRIES`] wrong tokens waits, and how long a quiet
/// address's count is kept.
const TOKEN_LOCKOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Most addresses whose wrong tokens are counted at once.
const TOKEN_SOURCES: usize = 4096;

/// Wrong tokens by source address: (count, when the last came).
#[derive(Default)]
pub(crate) struct TokenFailures(
    std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (u32, std::time::Instant)>>,
);

impl TokenFailures {
    /// Time left before `ip` may try again, if it is locked out.
    fn locked(&self, ip: std::net::IpAddr) -> Option<std::time::Duration> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let &(count, last) = map.get(&ip)?;
        let left = TOKEN_LOCKOUT.checked_sub(last.elapsed())?;
        (count >= TOKEN_TRIES).then_some(left)
    }

    fn failed(&self, ip: std::net::IpAddr) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= TOKEN_SOURCES && !map.contains_key(&ip) {
            map.retain(|_, (_, last)| last.elapsed() < TOKEN_LOCKOUT);
            if map.len() >= TOKEN_SOURCES {
                return; // full of recent failures: the oldest are kept, this one not counted
            }
        }
        let entry = map.entry(ip).or_insert((0, std::time::Instant::now()));
        if entry.1.elapsed() >= TOKEN_LOCKOUT {
            entry.0 = 0; // quiet long enough: start over
        }
        entry.0 += 1;
        entry.1 = std::time::Instant::now();
    }

    fn succeeded(&self, ip: std::net::IpAddr) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&ip);
    }
}

async fn require_token(
    State(api): Shared,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &api.token {
        let ip = peer.ip().to_canonical();
        if let Some(left) = api.token_failures.locked(ip) {
            return bad(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{TOKEN_TRIES} wrong tokens from this address; try again in {} s",
                    left.as_secs() + 1
                ),
            );
        }
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
            .or_else(|| {
                request.uri().query().and_then(|q| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix("token="))
                        .map(str::to_owned)
                })
            });
        let ok = given.is_some_and(|given| {
            given.len() == token.len()
                && given
                    .bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !ok {
            api.token_failures.failed(ip);
            return (
                StatusCode::UNAUTHORIZED,
                "a token is needed (?token= or Bearer)\n",
            )
                .into_response();
        }
        api.token_failures.succeeded(ip);
    }
    next.run(request).await
}

/// Every error under `/api/` is JSON, whoever made it: a handler, or axum itself (a query that
/// does not parse, a body over the limit, an unknown path or method) — whose plain-text body
/// becomes the `error` text.
async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            // Ingest's line-by-line answers are JSON too, whatever the status.
            v.as_bytes().starts_with(b"application/json")
                || v.as_bytes().starts_with(b"application/x-ndjson")
        });
    if !api || is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // Errors made here are short; a longer body is cut, never buffered whole.
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let why = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    Fail(status, why).into_response()
}

/// A query string, parsed; one that does not parse is a JSON 400 saying why.
struct Params<T>(T);

impl<T, S> axum::extract::FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Fail;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Fail> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Params(value))
            .map_err(|rejection| Fail(StatusCode::BAD_REQUEST, rejection.body_text()))
    }
}

/// A time in a query: Unix seconds (`1800000000.5`) or RFC 3339 (`2027-01-15T08:00:00Z`).
#[derive(Clone, Copy)]
struct Time(f64);

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if let Ok(seconds) = text.parse::<f64>() {
            if seconds.is_finite() {
                return Ok(Time(seconds));
            }
        }
        time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
            .map(|at| Time(at.unix_timestamp_nanos() as f64 / 1e9))
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a time: give Unix seconds or RFC 3339 (2027-01-15T08:00:00Z)"
                ))
            })
    }
}

/// A JSON error response.
fn bad(status: StatusCode, why: impl Into<String>) -> Response {
    Fail(status, why.into()).into_response()
}

/// A request that failed: its status and why.
struct Fail(StatusCode, String);

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

/// Runs a store read in its turn (a few at once: more wait up to [`TURN_WAIT`], then are told
/// 503). The turn is held until the read is done, even if its request is gone.
async fn query<T: Send + 'static>(
    api: &Api,
    read: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, Fail> {
    let Some(turn) = wait_turn(&api.queries).await else {
        return Err(Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many queries at once; try again in a moment".into(),
        ));
    };
    tokio::spawn(async move {
        let _turn = turn;
        read.await
    })
    .await
    .map_err(|_| {
        Fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the query stopped".into(),
        )
    })?
    .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn devices(State(api): Shared) -> Response {
    let connected = api.ingest.presence.snapshot();
    let store = api.ingest.store.clone();
    let rows = match query(&api, async move { store.devices().await }).await {
        Ok(rows) => rows,
        Err(fail) => return fail.into_response(),
    };
    let now = now_secs();
    let activity = api.activity.snapshot();
    let list: Vec<Value> = rows
        .into_iter()
        .map(|device| {
            let connections = connected.get(&device.name).copied().unwrap_or(0);
            let node = node_of(&api, &device.name, connections);
            let counts = activity
                .get(device.name.as_str())
                .cloned()
                .unwrap_or_default();
            json!({
                "name": device.name,
                "online": connections > 0 || node.is_some() || now - device.last_seen < ONLINE_WINDOW,
                "connections": connections,
                // The hub node it is connected to (with a bus: this one or another).
                "node": node,
                "first_seen": device.first_seen,
                "last_seen": device.last_seen,
                "series": device.series,
                "rate": counts.rate(now as u64),
                "records": counts.records,
                "auth_failures": counts.auth_failures,
                // Its clock against the hub's, from its time exchanges (null: none lately) —
                // on another node, as that node estimates it.
                "clock": clock_of(&api, &device.name),
            })
        })
        .collect();
    axum::Json(json!({ "devices": list })).into_response()
}

/// The node `device` is connected to: this one (if it has connections here), or another that
/// the bus says has it; `None` without a bus or a connection.
fn node_of(api: &Api, device: &str, connections: u32) -> Option<String> {
    #[cfg(feature = "nats")]
    if let Some(bus) = &api.bus {
        if connections > 0 {
            return Some(bus.node.to_string());
        }
        return bus.elsewhere.node(device);
    }
    let _ = (api, device, connections);
    None
}

/// A device's clock estimate: this node's, else (with a bus) the node's it is connected to.
fn clock_of(api: &Api, device: &str) -> Value {
    if let Some(estimate) = api.ingest.clocks.estimate(device) {
        return json!(estimate);
    }
    #[cfg(feature = "nats")]
    if let Some(bus) = &api.bus {
        return bus.elsewhere.clock(device);
    }
    Value::Null
}

#[derive(Deserialize)]
struct DeviceQuery {
    device: String,
}

async fn streams(State(api): Shared, Params(q): Params<DeviceQuery>) -> Response {
    let store = api.ingest.store.clone();
    match query(&api, async move { store.streams(q.device).await }).await {
        Ok(Some(streams)) => axum::Json(streams).into_response(),
        Ok(None) => bad(StatusCode::NOT_FOUND, "no such device"),
        Err(fail) => fail.into_response(),
    }
}

#[derive(Deserialize)]
struct SeriesParams {
    device: String,
    stream: String,
    field: String,
    from: Option<Time>,
    to: Option<Time>,
    points: Option<usize>,
}

/// `[from, to]`: `to` defaults to now, `from` to an hour before `to`.
fn range(from: Option<Time>, to: Option<Time>) -> Result<(f64, f64), Fail> {
    let to = to.map_or_else(now_secs, |t| t.0);
    let from = from.map_or(to - 3600.0, |t| t.0);
    if !(from.is_finite() && to.is_finite()) || from > to {
        return Err(Fail(
            StatusCode::BAD_REQUEST,
            "from must not be after to".into(),
        ));
    }
    Ok((from, to))
}

/// A series over a time range: the points themselves when there are at most `points`
/// (default 1000), else that many equal buckets with min, max, mean and count each.
async fn series(State(api): Shared, Params(q): Params<SeriesParams>) -> Response {
    let (from, to) = match range(q.from, q.to) {
        Ok(range) => range,
        Err(fail) => return fail.into_response(),
    };
    let asked = SeriesQuery {
        device: q.device,
        stream: q.stream,
        field: q.field,
        from,
        to,
        points: q.points.unwrap_or(1000).clamp(1, MAX_POINTS),
    };
    let store = api.ingest.store.clone();
    let read = {
        let asked = asked.clone();
        async move { store.series(asked).await }
    };
    let series = match query(&api, read).await {
        Ok(Some(series)) => series,
        Ok(None) => return bad(StatusCode::NOT_FOUND, "no such series"),
        Err(fail) => return fail.into_response(),
    };
    let mut body = match series.points {
        SeriesPoints::Raw(points) => {
            json!({ "raw": true, "count": series.count, "points": points })
        }
        SeriesPoints::Buckets { width, rows } => json!({
            "raw": false,
            "count": series.count,
            "bucket_secs": width,
            "columns": ["start", "min", "max", "mean", "count"],
            "points": rows,
        }),
    };
    body["device"] = asked.device.into();
    body["stream"] = asked.stream.into();
    body["field"] = asked.field.into();
    body["from"] = from.into();
    body["to"] = to.into();
    axum::Json(body).into_response()
}

#[derive(Deserialize)]
struct DetectionParams {
    device: Option<String>,
    stream: Option<String>,
    label: Option<String>,
    min_score: Option<f64>,
    from: Option<Time>,
    to: Option<Time>,
    limit: Option<usize>,
}

/// Frames with the detections that match, newest first.
async fn detections(State(api): Shared, Params(q): Params<DetectionParams>) -> Response {
    let (from, to) = match range(q.from, q.to) {
        Ok(range) => range,
        Err(fail) => return fail.into_response(),
    };
    let asked = DetectionQuery {
        device: q.device,
        stream: q.stream,
        label: q.label,
        min_score: q.min_score.unwrap_or(0.0),
        from,
        to,
        limit: q.limit.unwrap_or(100).clamp(1, MAX_FRAMES),
        max_detections: MAX_DETECTIONS,
    };
    let store = api.ingest.store.clone();
    match query(&api, async move { store.detections(asked).await }).await {
        Ok(detections) => axum::Json(detections).into_response(),
        Err(fail) => fail.into_response(),
    }
}

#[derive(Deserialize)]
struct ExportParams {
    device: String,
    stream: Option<String>,
    field: Option<String>,
    from: Option<Time>,
    to: Option<Time>,
}

/// A text cell safe in a spreadsheet: quoted when needed, and never read as a formula.
fn csv_cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// The points of one device (optionally one stream and field) in a range, as CSV, streamed:
/// rows are read as the client takes them, a few chunks ahead, so an export of any size holds
/// little memory (and stops when the client goes).
async fn export_csv(State(api): Shared, Params(q): Params<ExportParams>) -> Response {
    let (from, to) = match range(q.from, q.to) {
        Ok(range) => range,
        Err(fail) => return fail.into_response(),
    };
    let Some(turn) = wait_turn(&api.queries).await else {
        return busy("queries");
    };
    let device = csv_cell(&q.device);
    let mut chunks = api.ingest.store.export(
        ExportQuery {
            device: q.device,
            stream: q.stream,
            field: q.field,
            from,
            to,
            max_rows: MAX_CSV_ROWS,
        },
        CSV_ROWS_PER_CHUNK,
    );
    // The first chunk decides the status: an error before any row is a 500.
    let first = match chunks.recv().await {
        Some(Err(err)) => return bad(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        Some(Ok(rows)) => rows,
        None => Vec::new(),
    };
    let mut out = String::from("ts,recv_ts,device,stream,field,value\n");
    csv_rows(&mut out, &device, &first);
    let head = tokio_stream::once(Ok(bytes::Bytes::from(out)));
    let rest = ReceiverStream::new(chunks).map(move |chunk| {
        let _turn = &turn; // held until the export is done (or its client gone)
        match chunk {
            Ok(rows) => {
                let mut out = String::new();
                csv_rows(&mut out, &device, &rows);
                Ok(bytes::Bytes::from(out))
            }
            // Mid-way: the response is cut short, which the client sees as an error.
            Err(err) => Err(std::io::Error::other(err.to_string())),
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"socketeer-export.csv\"",
            ),
        ],
        axum::body::Body::from_stream(head.chain(rest)),
    )
        .into_response()
}

#[derive(Deserialize)]
struct McapParams {
    /// One device, or all.
    device: Option<String>,
    from: Option<Time>,
    to: Option<Time>,
    /// `zstd` (default), `lz4` or `none`.
    compression: Option<String>,
}

/// An MCAP recording of a range (the last hour by default), written as it is read: the
/// response streams while a blocking thread reads the store a page per stream at a time, a few
/// buffers ahead of the client.
async fn export_mcap(State(api): Shared, Params(q): Params<McapParams>) -> Response {
    let (from, to) = match range(q.from, q.to) {
        Ok(range) => range,
        Err(fail) => return fail.into_response(),
    };
    if let Some(device) = &q.device {
        if !socketeer::keys::valid_device_name(device) {
            return bad(StatusCode::BAD_REQUEST, "bad device name");
        }
    }
    let compression = match q.compression.as_deref() {
        None => crate::recording::Compression::Zstd,
        Some(name) => match crate::recording::Compression::from_name(name) {
            Some(c) => c,
            None => return bad(StatusCode::BAD_REQUEST, "compression is zstd, lz4 or none"),
        },
    };
    let Some(turn) = wait_turn(&api.queries).await else {
        return busy("queries");
    };
    let what = crate::recording::McapExport {
        device: q.device.clone(),
        from,
        to,
        compression,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(MCAP_BUFFERS_AHEAD);
    let reader = api.ingest.store.reader();
    tokio::task::spawn_blocking(move || {
        let _turn = turn; // held until the recording is written (or its client gone)
        let mut out = std::io::BufWriter::with_capacity(MCAP_BUFFER, Sender(tx.clone()));
        let written = crate::recording::write(&reader, &what, &mut out)
            .and_then(|_| std::io::Write::flush(&mut out).map_err(Into::into));
        if let Err(err) = written {
            // Mid-way: the response is cut short, which the client sees as an error.
            let _ = tx.blocking_send(Err(std::io::Error::other(err.to_string())));
        }
    });
    let name = q.device.as_deref().unwrap_or("fleet");
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.mcap\""),
            ),
        ],
        axum::body::Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response()
}

/// Bytes of a recording sent at once, and how many such buffers are written ahead.
const MCAP_BUFFER: usize = 256 * 1024;
const MCAP_BUFFERS_AHEAD: usize = 4;

/// A `Write` whose bytes go to a response body (from a blocking thread); it fails once the
/// client is gone, which ends the recording.
struct Sender(tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>);

impl std::io::Write for Sender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Rows of CSV read at a time (about 64 KiB of text).
const CSV_ROWS_PER_CHUNK: usize = 1024;

/// Appends `rows` as CSV lines of `device` (already a CSV cell).
fn csv_rows(out: &mut String, device: &str, rows: &[ExportRow]) {
    for row in rows {
        let value = match &row.value {
            Cell::Real(n) => n.to_string(),
            Cell::Integer(n) => n.to_string(),
            Cell::Text(text) => csv_cell(text),
            Cell::Empty => String::new(),
        };
        out.push_str(&format!(
            "{:.6},{:.6},{device},{},{},{value}\n",
            row.ts,
            row.recv_ts,
            csv_cell(&row.stream),
            csv_cell(&row.field)
        ));
    }
}

/// Server-sent events: one `data:` JSON object per committed record, through the viewer's own
/// [`Lane`]: records queue (a viewer further behind than its queue is dropped — its browser
/// reconnects — never slowing ingest), pictures are latest-only per stream.
#[derive(Deserialize)]
struct LiveQuery {
    /// Only this device's records.
    device: Option<String>,
}

async fn live(
    State(api): Shared,
    hangup: Option<axum::Extension<crate::web::Hangup>>,
    Params(q): Params<LiveQuery>,
) -> Response {
    let only: Option<Arc<str>> = match q.device {
        Some(device) if !socketeer::keys::valid_device_name(&device) => {
            return bad(StatusCode::BAD_REQUEST, "bad device name");
        }
        device => device.map(Into::into),
    };
    let mut events = api.live.subscribe();
    let lane: Arc<Lane<StreamKey, Arc<str>>> = Arc::new(Lane::new(VIEWER_QUEUE));
    // First every stream's newest (from every node), so the viewer sees the fleet at once.
    for event in api.newest.all(only.as_deref()) {
        lane.push_latest(
            (Arc::clone(&event.device), Arc::clone(&event.stream)),
            Arc::clone(&event.json),
        );
    }
    // Cancelled when the response stream is dropped: the viewer went.
    let gone = tokio_util::sync::CancellationToken::new();
    let shutdown = api.shutdown.clone();
    api.ingest.stats.viewers.fetch_add(1, Ordering::Relaxed);
    let ingest = Arc::clone(&api.ingest);
    tokio::spawn({
        let lane = Arc::clone(&lane);
        let gone = gone.clone();
        async move {
            let mut dropped = false;
            loop {
                tokio::select! {
                    () = shutdown.triggered() => break,
                    () = gone.cancelled() => break,
                    event = events.recv() => match event {
                        Ok(event) if only.as_ref().is_some_and(|only| *only != event.device) => {}
                        Ok(event) if event.picture => lane.push_latest(
                            (Arc::clone(&event.device), Arc::clone(&event.stream)),
                            Arc::clone(&event.json),
                        ),
                        Ok(event) => {
                            if lane.push(Arc::clone(&event.json)).is_err() {
                                dropped = true;
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            dropped = true;
                            break;
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
            lane.close();
            if dropped {
                // Not just the end of its stream: the connection goes, with what is queued for
                // it here and in its socket (its browser reconnects and starts afresh).
                ingest.stats.viewers_dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(axum::Extension(hangup)) = hangup {
                    hangup.now();
                }
            }
            ingest.stats.viewers.fetch_sub(1, Ordering::Relaxed);
        }
    });
    let stream =
        futures_util::stream::unfold((lane, gone.drop_guard()), |(lane, guard)| async move {
            let event = lane.next().await?;
            Some((
                Ok::<_, Infallible>(Event::default().data(&*event)),
                (lane, guard),
            ))
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `None` when this hub takes HTTP ingest: with a token (checked before), or with
/// `--http-ingest-no-auth`; else the 403 that says how to allow it.
fn ingest_refused(api: &Api) -> Option<Response> {
    (api.token.is_none() && !api.ingest_no_auth).then(|| {
        bad(
            StatusCode::FORBIDDEN,
            "HTTP ingest needs a token: start the hub with --http-token, or with \
             --http-ingest-no-auth to let any program that reaches this port write as any device",
        )
    })
}

/// The session an ingest request names (the rule of a `{"session":..}` line: 1-64 of
/// `A-Z a-z 0-9 _ . -`; none is the empty session), once its device name is checked; else 400.
fn sender(device: &str, session: Option<String>) -> Result<String, Fail> {
    if !socketeer::keys::valid_device_name(device) {
        return Err(Fail(StatusCode::BAD_REQUEST, "bad device name".into()));
    }
    match session.map(|s| crate::record::session_id(&s)).transpose() {
        Ok(session) => Ok(session.unwrap_or_default()),
        Err(refusal) => Err(Fail(StatusCode::BAD_REQUEST, refusal.why)),
    }
}

#[derive(Deserialize)]
struct IngestQuery {
    device: String,
    session: Option<String>,
}

/// JSON lines in the body, answered line by line as over TCP. The device is named in the
/// query (the HTTP token, not a device key, is what admits the sender).
///
/// The body is read as it arrives, within the body deadline and [`MAX_BODY`]; its records go
/// to the writer in jobs as they are read (a few waiting at a time), so a large body holds
/// only the answers, not its records, in memory.
async fn ingest(
    State(api): Shared,
    Params(q): Params<IngestQuery>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if let Some(refused) = ingest_refused(&api) {
        return refused;
    }
    // A form (which any web page can make a browser send) cannot have this type.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            let v = v.trim();
            [
                "application/x-ndjson",
                "application/jsonl",
                "application/json",
            ]
            .iter()
            .any(|t| v.eq_ignore_ascii_case(t))
        });
    if !json {
        return bad(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as Content-Type: application/x-ndjson (JSON lines)",
        );
    }
    let session = match sender(&q.device, q.session) {
        Ok(session) => session,
        Err(fail) => return fail.into_response(),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return bad(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body may be at most {MAX_BODY} bytes; send fewer lines per request"),
        );
    }
    let Some(_turn) = wait_turn(&api.uploads).await else {
        return busy("uploads");
    };
    let ingest = Arc::clone(&api.ingest);
    let mut answers = Answers::new(Arc::clone(&ingest));
    let mut run = Session::new(ingest, Who::Request(q.device.into()), &session, false);
    let mut out = Vec::new();
    let mut lines = tokio_util::codec::LinesCodec::new_with_max_length(MAX_LINE);
    let mut buffer = bytes::BytesMut::new();
    let mut body = body.into_data_stream();
    let deadline = tokio::time::Instant::now() + api.body_deadline;
    let mut read = 0usize;
    // Why the body was not read to its end, if it was not.
    let mut cut: Option<(StatusCode, String)> = None;
    'body: loop {
        let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
            Err(_) => {
                cut = Some((
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body was not all sent within {} s; the rest was not read",
                        api.body_deadline.as_secs_f64()
                    ),
                ));
                break;
            }
            Ok(None) => None,
            Ok(Some(Err(err))) => {
                cut = Some((
                    StatusCode::BAD_REQUEST,
                    format!("the body could not be read: {err}"),
                ));
                break;
            }
            Ok(Some(Ok(chunk))) => Some(chunk),
        };
        let done = chunk.is_none();
        if let Some(chunk) = chunk {
            read += chunk.len();
            if read > MAX_BODY {
                cut = Some((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body may be at most {MAX_BODY} bytes; the rest was not read"),
                ));
                break;
            }
            buffer.extend_from_slice(&chunk);
        }
        loop {
            let decoded = if done {
                tokio_util::codec::Decoder::decode_eof(&mut lines, &mut buffer)
            } else {
                tokio_util::codec::Decoder::decode(&mut lines, &mut buffer)
            };
            let line = match decoded {
                Ok(Some(line)) => Ok(line),
                Ok(None) => break,
                Err(tokio_util::codec::LinesCodecError::MaxLineLengthExceeded) => {
                    Err(Refusal::new(
                        Reason::TooLong,
                        format!("line longer than {MAX_LINE} bytes"),
                    ))
                }
                Err(tokio_util::codec::LinesCodecError::Io(_)) => {
                    Err(Refusal::new(Reason::Utf8, "not UTF-8"))
                }
            };
            let step = match &line {
                Ok(text) => run.line(Ok(text.as_bytes()), &mut answers).await,
                Err(refusal) => run.line(Err(refusal.clone()), &mut answers).await,
            };
            if step != Step::Next {
                // Image bytes in a body of JSON lines: nothing after them can be read as lines.
                cut = Some((
                    StatusCode::BAD_REQUEST,
                    "an image header in a body of JSON lines (images go to POST \
                     /api/ingest/image); the rest was not read"
                        .to_owned(),
                ));
                break 'body;
            }
            if run.batched() >= BATCH {
                run.submit(&mut answers).await;
            }
            // A body's answers are held until it ends: a few jobs in flight, then wait.
            while answers.jobs_waiting() > BODY_JOBS_IN_FLIGHT {
                answers.ready(&mut out);
                answers.settle(&mut out).await;
            }
        }
        if done {
            break;
        }
    }
    run.submit(&mut answers).await;
    let mut status = StatusCode::OK;
    if let Some((why_status, why)) = cut {
        status = why_status;
        answers.now(Answer::Ended { why });
    }
    answers.finish(&mut out).await;
    (
        status,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        out,
    )
        .into_response()
}

/// Most jobs of one body waiting for the writer at once.
const BODY_JOBS_IN_FLIGHT: usize = 8;

#[derive(Deserialize)]
struct ImageUploadQuery {
    device: String,
    stream: String,
    ts: Option<Time>,
    seq: Option<u64>,
    session: Option<String>,
    /// The detections found on it, as the JSON list a header line carries.
    detections: Option<String>,
}

/// One image, as the body (`Content-Type: image/jpeg` or `image/png`), with its stream, time,
/// number and detections in the query: stored as the TCP link's header and bytes are, and
/// answered with the same line (`{"ack":N}`; 422 with the refusal; 503 with retry).
async fn ingest_image(
    State(api): Shared,
    Params(q): Params<ImageUploadQuery>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if let Some(refused) = ingest_refused(&api) {
        return refused;
    }
    // A form (which any web page can make a browser send) cannot have these types.
    let Some(format) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(ImageFormat::from_mime)
    else {
        return bad(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the image as the body, with Content-Type: image/jpeg or image/png",
        );
    };
    let session = match sender(&q.device, q.session) {
        Ok(session) => session,
        Err(fail) => return fail.into_response(),
    };
    let max = api.ingest.max_image;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return bad(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("an image may be at most {max} bytes (the hub's --max-image)"),
        );
    }
    let Some(_turn) = wait_turn(&api.uploads).await else {
        return busy("uploads");
    };
    let kib = u32::try_from(max.div_ceil(1024)).unwrap_or(u32::MAX);
    let Ok(_room) = Arc::clone(&api.ingest.image_room)
        .acquire_many_owned(kib)
        .await
    else {
        return busy("uploads");
    };
    // The body, within the body deadline and the cap.
    let mut data = bytes::BytesMut::new();
    let mut stream = body.into_data_stream();
    let deadline = tokio::time::Instant::now() + api.body_deadline;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                return bad(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the image was not all sent within {} s",
                        api.body_deadline.as_secs_f64()
                    ),
                );
            }
            Ok(None) => break,
            Ok(Some(Err(err))) => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    format!("the body could not be read: {err}"),
                );
            }
            Ok(Some(Ok(chunk))) => {
                if data.len() + chunk.len() > max {
                    return bad(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("an image may be at most {max} bytes (the hub's --max-image)"),
                    );
                }
                data.extend_from_slice(&chunk);
            }
        }
    }
    if data.is_empty() {
        return bad(StatusCode::BAD_REQUEST, "the body is empty: send the image");
    }
    // The header line a robot would have sent before these bytes.
    let mut header = serde_json::Map::new();
    header.insert("stream".into(), q.stream.into());
    if let Some(ts) = q.ts {
        header.insert("ts".into(), ts.0.into());
    }
    if let Some(seq) = q.seq {
        header.insert("seq".into(), seq.into());
    }
    if let Some(detections) = &q.detections {
        match serde_json::from_str::<Value>(detections) {
            Ok(list) => drop(header.insert("detections".into(), list)),
            Err(err) => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    format!("detections: not valid JSON: {err}"),
                );
            }
        }
    }
    header.insert(
        "image".into(),
        json!({ "format": format.name(), "bytes": data.len() }),
    );
    let header = Value::Object(header).to_string();
    let ingest = Arc::clone(&api.ingest);
    let mut answers = Answers::new(Arc::clone(&ingest));
    let mut run = Session::new(ingest, Who::Upload(q.device.into()), &session, false);
    if let Step::Image(_) = run.line(Ok(header.as_bytes()), &mut answers).await {
        run.image(data.freeze(), &mut answers).await;
    }
    run.submit(&mut answers).await;
    let mut out = Vec::new();
    let answer = answers.finish_one(&mut out).await;
    let status = match answer {
        Some(Answer::Refused { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
        Some(Answer::Retry { .. }) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    if out.is_empty() {
        out.extend_from_slice(b"{\"stored\":true}\n");
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        out,
    )
        .into_response()
}

#[derive(Deserialize)]
struct FramesQuery {
    device: String,
    stream: Option<String>,
    from: Option<Time>,
    to: Option<Time>,
    limit: Option<usize>,
}

/// A device's frames in a range, in time order: when, size, detections, image (if any).
async fn frames(State(api): Shared, Params(q): Params<FramesQuery>) -> Response {
    let (from, to) = match range(q.from, q.to) {
        Ok(range) => range,
        Err(fail) => return fail.into_response(),
    };
    let asked = FrameQuery {
        device: q.device,
        stream: q.stream,
        from,
        to,
        limit: q.limit.unwrap_or(MAX_FRAME_LIST).clamp(1, MAX_FRAME_LIST),
    };
    let store = api.ingest.store.clone();
    match query(&api, async move { store.frames(asked).await }).await {
        Ok((frames, truncated)) => {
            axum::Json(json!({ "frames": frames, "truncated": truncated })).into_response()
        }
        Err(fail) => fail.into_response(),
    }
}

#[derive(Deserialize)]
struct FrameQueryParams {
    id: Option<i64>,
    device: Option<String>,
    stream: Option<String>,
    at: Option<Time>,
}

/// One image's bytes: a frame's (`?id=`, cached for good: it never changes), or a device's
/// (stream's) newest at or before a time (`?device=&stream=&at=`, default the newest; revalidated by
/// its ETag, since a newer frame may arrive).
async fn frame(
    State(api): Shared,
    Params(q): Params<FrameQueryParams>,
    headers: HeaderMap,
) -> Response {
    let (asked, immutable) = match (q.id, q.device) {
        (Some(id), _) => (ImageQuery::Id(id), true),
        (None, Some(device)) => (
            ImageQuery::At {
                device,
                stream: q.stream,
                at: q.at.map_or(f64::MAX, |t| t.0),
            },
            false,
        ),
        (None, None) => return bad(StatusCode::BAD_REQUEST, "give id=, or device= (and at=)"),
    };
    let store = api.ingest.store.clone();
    let image = match query(&api, async move { store.image(asked).await }).await {
        Ok(Some(image)) => image,
        Ok(None) => return bad(StatusCode::NOT_FOUND, "no such image"),
        Err(fail) => return fail.into_response(),
    };
    let etag = format!("\"f{}\"", image.frame_id);
    let cache = if immutable {
        "private, max-age=31536000, immutable"
    } else {
        "private, no-cache"
    };
    let mime =
        ImageFormat::from_name(&image.format).map_or("application/octet-stream", ImageFormat::mime);
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, mime)], image.data).into_response()
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::ETAG.as_str(), etag),
        (header::CACHE_CONTROL.as_str(), cache.to_owned()),
        ("x-frame-id", image.frame_id.to_string()),
        ("x-frame-ts", image.ts.to_string()),
        ("x-frame-stream", image.stream),
    ] {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
    response
}

/// Prometheus text format.
async fn metrics(State(api): Shared, _headers: HeaderMap) -> Response {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let gauges = crate::metrics::Gauges {
        queued: api.ingest.store.queued() as u64,
        connected: api.ingest.presence.snapshot().len() as u64,
        http: [
            load(&api.web.open),
            load(&api.web.refused),
            load(&api.web.stalled),
        ],
        #[cfg(feature = "nats")]
        bus_connected: api.bus.as_ref().map(|bus| u64::from(bus.connected())),
        #[cfg(not(feature = "nats"))]
        bus_connected: None,
    };
    let out = crate::metrics::prometheus(&api.ingest.stats, &gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
