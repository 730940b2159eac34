//! `socketeer hub`: the telemetry server (SPEC §7). Robots' records are parsed and checked in
//! [`model`], read from connections in [`ingest`], and committed by one writer thread in
//! [`store`] before they are acknowledged.

pub(crate) mod http;
pub(crate) mod influx;
pub(crate) mod ingest;
pub(crate) mod model;
pub(crate) mod store;
pub(crate) mod web;

use std::sync::Arc;

use anyhow::Context;

use crate::cli::HubArgs;
use crate::failure::{UsageError, parse_endpoint};
use crate::serve::{NoDatagrams, Runner, Service};
use influx::InfluxHandler;
use ingest::{Ingest, IngestHandler, Stats};
use store::{Store, StoreConfig};

/// Default ingest endpoint.
pub(crate) const DEFAULT_INGEST: &str = "127.0.0.1:7000";
/// Live events buffered for viewers (a viewer further behind is dropped).
const LIVE_CAPACITY: usize = 4096;
/// Default InfluxDB line protocol endpoints (Telegraf's socket_listener port).
pub(crate) const DEFAULT_INFLUX: [&str; 2] = ["tcp://127.0.0.1:8094", "udp://127.0.0.1:8094"];

/// Runs `socketeer hub`.
pub(crate) async fn run(mut args: HubArgs) -> anyhow::Result<i32> {
    if args.demo {
        if args.serve.guard.key_file.is_some() {
            return Err(UsageError(
                "hub: --demo runs its own robots without keys; leave out --key-file".into(),
            )
            .into());
        }
        if !(args.demo_rate > 0.0 && args.demo_rate <= 1000.0) {
            return Err(
                UsageError("hub: --demo-rate must be above 0 and at most 1000 Hz".into()).into(),
            );
        }
        args.no_auth = true;
    }
    // With --demo and no --db: a database of its own, removed at exit.
    let temporary = args.demo && args.db.is_none();
    let db = match &args.db {
        Some(path) => path.clone(),
        None if temporary => {
            std::env::temp_dir().join(format!("socketeer-demo-{}.db", std::process::id()))
        }
        None => "socketeer.db".into(),
    };
    // A hub that fails before it serves (a port in use, a bad key file) leaves no database it
    // created behind: the next attempt starts as if this one never ran.
    let existed = std::fs::symlink_metadata(&db).is_ok();
    let served = std::sync::atomic::AtomicBool::new(false);
    let result = serve_db(args, &db, &served).await;
    let never_served = result.is_err() && !served.load(std::sync::atomic::Ordering::SeqCst);
    if temporary || (never_served && !existed && holds_nothing(&db)) {
        remove_database(&db);
    }
    result
}

/// True when the database has no device in it, so nothing was ever stored (ingest may have
/// been accepting before a later endpoint failed to bind: then what it took is kept).
fn holds_nothing(db: &std::path::Path) -> bool {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    rusqlite::Connection::open_with_flags(db, flags)
        .and_then(|conn| {
            conn.query_row("SELECT NOT EXISTS (SELECT 1 FROM devices)", [], |row| {
                row.get::<_, bool>(0)
            })
        })
        .unwrap_or(false)
}

/// Removes a SQLite database and its WAL files.
fn remove_database(db: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.to_owned().into_os_string();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
}

async fn serve_db(
    mut args: HubArgs,
    db: &std::path::Path,
    served: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<i32> {
    if args.serve.guard.key_file.is_none() {
        if !args.no_auth {
            return Err(UsageError(
                "hub: give --key-file FILE so only your robots can write (make keys with \
                 `socketeer keygen --device NAME`), or --no-auth on a loopback or Unix endpoint"
                    .into(),
            )
            .into());
        }
        let listen = if args.serve.listen.is_empty() {
            vec![DEFAULT_INGEST.to_owned()]
        } else {
            args.serve.listen.clone()
        };
        for written in &listen {
            let ep = parse_endpoint(written)?;
            if !ep.is_local() {
                return Err(UsageError(format!(
                    "hub: --no-auth is only allowed on loopback and Unix endpoints, not {ep}"
                ))
                .into());
            }
        }
    }
    // Records may be long (many detections): at least the model's limit.
    args.serve.max_line = args.serve.max_line.max(model::MAX_LINE as u32);
    let (live, _) = tokio::sync::broadcast::channel(LIVE_CAPACITY);
    let activity = Arc::new(store::Activity::default());
    let (store, writer) = Store::open(StoreConfig {
        path: db.to_owned(),
        durability: args.sync,
        retention: (!args.retention.is_zero()).then_some(args.retention),
        max_batch: args.max_batch as usize,
        live: Some(live.clone()),
        activity: Arc::clone(&activity),
        queue: store::QueueLimits::default(),
        cardinality: store::Cardinality {
            devices: args.max_devices as usize,
            streams: args.max_streams as usize,
            fields: args.max_fields as usize,
        },
    })
    .with_context(|| format!("hub: --db {}", db.display()))?;
    tracing::info!(db = %db.display(), sync = ?args.sync, retention = ?args.retention, "storage open");
    let ingest = Arc::new(Ingest {
        store,
        stats: Arc::new(Stats::default()),
        presence: Arc::default(),
    });
    let status = serve_all(&args, db, &ingest, &activity, live, served).await;
    // Every connection has finished: drop the last handles so the writer commits what is
    // queued and stops, then wait for it.
    drop(ingest);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .context("hub: the storage thread")?
        .map_err(|_| anyhow::anyhow!("hub: the storage thread panicked"))?;
    tracing::info!("storage closed");
    status
}

/// Binds ingest and Influx endpoints, serves them until a signal, drains them together.
async fn serve_all(
    args: &HubArgs,
    db: &std::path::Path,
    ingest: &Arc<Ingest>,
    activity: &Arc<store::Activity>,
    live: tokio::sync::broadcast::Sender<Arc<str>>,
    served: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<i32> {
    let mut runner = Runner::new()?;
    let ingest_at = runner
        .add(
            &args.serve,
            Service {
                name: "hub",
                default_endpoint: DEFAULT_INGEST,
                make_handler: {
                    let ingest = Arc::clone(ingest);
                    move || IngestHandler(Arc::clone(&ingest))
                },
                datagram: None::<NoDatagrams>,
                auth_failures: Some(socketeer::AuthFailureHook::new({
                    let (total, activity) = (
                        Arc::clone(&ingest.stats.auth_failures),
                        Arc::clone(activity),
                    );
                    move |device| {
                        total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if let Some(device) = device {
                            activity.auth_failed(device);
                        }
                    }
                })),
            },
        )
        .await?;
    if !args.no_influx {
        let mut influx = args.serve.clone();
        influx.listen = if args.influx.is_empty() {
            DEFAULT_INFLUX.map(str::to_owned).to_vec()
        } else {
            args.influx.clone()
        };
        // Agents such as Telegraf cannot answer a challenge: no key, no TLS; who may send is
        // decided by address alone.
        influx.guard.key_file = None;
        influx.guard.tls_cert = None;
        influx.guard.tls_key = None;
        for written in &influx.listen {
            let ep = parse_endpoint(written)?;
            if !ep.is_local() && influx.guard.allow.is_empty() {
                return Err(UsageError(format!(
                    "hub: --influx {ep} is unauthenticated; beyond loopback say who may send \
                     with --allow CIDR"
                ))
                .into());
            }
        }
        let handler = InfluxHandler {
            ingest: Arc::clone(ingest),
            precision: args.influx_precision,
        };
        runner
            .add(
                &influx,
                Service {
                    name: "influx",
                    default_endpoint: DEFAULT_INFLUX[0],
                    make_handler: {
                        let handler = handler.clone();
                        move || handler.clone()
                    },
                    datagram: Some(handler),
                    auth_failures: None,
                },
            )
            .await?;
    }
    let dashboard = if args.no_http {
        None
    } else {
        Some(serve_http(args, db, ingest, activity, live, &mut runner).await?)
    };
    if args.demo {
        let robots_to = ingest_at
            .iter()
            .find(|ep| ep.is_stream())
            .context("hub: --demo needs a stream ingest endpoint")?;
        let mut fleet = crate::simulate::demo_fleet(robots_to, args.demo_robots, args.demo_rate);
        let shutdown = runner.shutdown().clone();
        runner.spawn(async move {
            shutdown.triggered().await;
            fleet.shutdown().await;
            Ok(())
        });
        outln!(
            "demo: {} robots at {} Hz sending to {robots_to}",
            args.demo_robots,
            args.demo_rate
        )?;
        if let Some(url) = &dashboard {
            outln!("open the dashboard: {url}")?;
        }
    }
    served.store(true, std::sync::atomic::Ordering::SeqCst);
    runner.run(args.serve.grace).await
}

/// Binds the HTTP endpoint (TCP only), decides on the token, and runs axum under the
/// runner's shutdown.
async fn serve_http(
    args: &HubArgs,
    db: &std::path::Path,
    ingest: &Arc<Ingest>,
    activity: &Arc<store::Activity>,
    live: tokio::sync::broadcast::Sender<Arc<str>>,
    runner: &mut Runner,
) -> anyhow::Result<String> {
    let written = args
        .http
        .strip_prefix("http://")
        .unwrap_or(&args.http)
        .trim_end_matches('/');
    let ep = parse_endpoint(written)?;
    let socketeer::Endpoint::Tcp { .. } = &ep else {
        return Err(UsageError(format!("--http {ep}: the dashboard needs a TCP endpoint")).into());
    };
    let address = ep.to_string();
    let address = address
        .strip_prefix("tcp://")
        .unwrap_or(&address)
        .to_owned();
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("--http {address}: cannot listen"))?;
    let bound = listener.local_addr()?;
    let token = match &args.http_token {
        Some(token) => Some(token.clone()),
        None if !bound.ip().is_loopback() => {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
        }
        None => None,
    };
    {
        outln!("listening on http://{bound}/")?;
        if let (Some(token), None) = (&token, &args.http_token) {
            outln!("http token (beyond loopback one is required): {token}")?;
        }
    }
    let url = match &token {
        Some(token) => format!("http://{bound}/?token={token}"),
        None => format!("http://{bound}/"),
    };
    let api = Arc::new(http::Api {
        db: db.to_owned(),
        ingest: Arc::clone(ingest),
        activity: Arc::clone(activity),
        live,
        token,
        shutdown: runner.shutdown().clone(),
        access: crate::guard::access_list(&args.serve.guard)?,
        token_failures: http::TokenFailures::default(),
        ingest_no_auth: args.http_ingest_no_auth,
        hosts: args
            .http_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        web: Arc::default(),
        queries: Arc::new(tokio::sync::Semaphore::new(http::QUERIES_AT_ONCE)),
        uploads: Arc::new(tokio::sync::Semaphore::new(http::UPLOADS_AT_ONCE)),
        body_deadline: args.http_timeout * 3,
    });
    let router = http::router(Arc::clone(&api));
    runner.spawn(web::serve(
        listener,
        router,
        runner.shutdown().clone(),
        web::Limits::for_this_process(args.http_max_conns, args.http_timeout),
        Arc::clone(&api.web),
    ));
    Ok(url)
}
