//! `socketeer hub`: the telemetry server (SPEC §7). Robots' records are parsed and checked in
//! [`model`], read from connections in [`ingest`], and committed by one writer thread in
//! [`store`] before they are acknowledged.

pub(crate) mod http;
pub(crate) mod influx;
pub(crate) mod ingest;
pub(crate) mod model;
pub(crate) mod store;

use std::io::Write;
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
    let (store, writer) = Store::open(StoreConfig {
        path: args.db.clone(),
        durability: args.sync,
        retention: (!args.retention.is_zero()).then_some(args.retention),
        max_batch: args.max_batch as usize,
        live: Some(live.clone()),
    })
    .with_context(|| format!("hub: --db {}", args.db.display()))?;
    tracing::info!(db = %args.db.display(), sync = ?args.sync, retention = ?args.retention, "storage open");
    let ingest = Arc::new(Ingest {
        store,
        stats: Arc::new(Stats::default()),
        presence: Arc::default(),
    });
    let status = serve_all(&args, &ingest, live).await;
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
    ingest: &Arc<Ingest>,
    live: tokio::sync::broadcast::Sender<Arc<str>>,
) -> anyhow::Result<i32> {
    let mut runner = Runner::new()?;
    runner
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
                auth_failures: Some(Arc::clone(&ingest.stats.auth_failures)),
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
    if !args.no_http {
        serve_http(args, ingest, live, &mut runner).await?;
    }
    runner.run(args.serve.grace).await
}

/// Binds the HTTP endpoint (TCP only), decides on the token, and runs axum under the
/// runner's shutdown.
async fn serve_http(
    args: &HubArgs,
    ingest: &Arc<Ingest>,
    live: tokio::sync::broadcast::Sender<Arc<str>>,
    runner: &mut Runner,
) -> anyhow::Result<()> {
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
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{bound}/")?;
        if let (Some(token), None) = (&token, &args.http_token) {
            writeln!(
                stdout,
                "http token (beyond loopback one is required): {token}"
            )?;
        }
        stdout.flush()?;
    }
    let api = Arc::new(http::Api {
        db: args.db.clone(),
        ingest: Arc::clone(ingest),
        live,
        token,
        shutdown: runner.shutdown().clone(),
    });
    let shutdown = runner.shutdown().clone();
    let router = http::router(api);
    runner.spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.triggered().await })
            .await
            .context("http server")
    });
    Ok(())
}
