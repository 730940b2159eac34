//! `socketeer hub`: the telemetry server (SPEC §7). Robots' records are parsed and checked in
//! [`model`], read from connections in [`ingest`], and committed by one writer thread in
//! [`store`] before they are acknowledged.

pub(crate) mod influx;
pub(crate) mod ingest;
pub(crate) mod model;
pub(crate) mod store;

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
    let (store, writer) = Store::open(StoreConfig {
        path: args.db.clone(),
        durability: args.sync,
        retention: (!args.retention.is_zero()).then_some(args.retention),
        max_batch: args.max_batch as usize,
    })
    .with_context(|| format!("hub: --db {}", args.db.display()))?;
    tracing::info!(db = %args.db.display(), sync = ?args.sync, retention = ?args.retention, "storage open");
    let ingest = Arc::new(Ingest {
        store,
        stats: Arc::new(Stats::default()),
    });
    let status = serve_all(&args, &ingest).await;
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
async fn serve_all(args: &HubArgs, ingest: &Arc<Ingest>) -> anyhow::Result<i32> {
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
                },
            )
            .await?;
    }
    runner.run(args.serve.grace).await
}
