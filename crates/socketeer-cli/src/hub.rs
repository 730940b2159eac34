//! `socketeer hub`: the telemetry hub of the `socketeer-hub` crate, configured from the flags,
//! served on the endpoints they name (printing each as bound), drained on SIGINT/SIGTERM. With
//! `--demo`, simulated robots in the same process.

use anyhow::Context;
use socketeer_hub::config::{Cardinality, Database, Durability, Precision};
use socketeer_hub::{HttpConfig, Hub, HubConfig, record};

use crate::cli::{HubArgs, PrecisionArg, SyncArg};
use crate::failure::{UsageError, parse_endpoint};
use crate::serve::{NoDatagrams, Runner, Service};

/// Default ingest endpoint.
pub(crate) const DEFAULT_INGEST: &str = "127.0.0.1:7000";
/// Default InfluxDB line protocol endpoints (Telegraf's socket_listener port).
pub(crate) const DEFAULT_INFLUX: [&str; 2] = ["tcp://127.0.0.1:8094", "udp://127.0.0.1:8094"];

/// Runs `socketeer hub`.
pub(crate) async fn run(mut args: HubArgs) -> anyhow::Result<i32> {
    if let Some(crate::cli::HubAction::Migrate(migrate)) = args.action.take() {
        return self::migrate(migrate).await;
    }
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
    let db: std::path::PathBuf = match &args.db {
        Some(text) => {
            match Database::parse(text).map_err(|why| UsageError(format!("hub: --db: {why}")))? {
                Database::Sqlite(path) => path,
                Database::Postgres(url) => {
                    let served = std::sync::atomic::AtomicBool::new(false);
                    return serve_db(args, Database::Postgres(url), &served).await;
                }
            }
        }
        None if temporary => {
            std::env::temp_dir().join(format!("socketeer-demo-{}.db", std::process::id()))
        }
        None => "socketeer.db".into(),
    };
    // A hub that fails before it serves (a port in use, a bad key file) leaves no database it
    // created behind: the next attempt starts as if this one never ran.
    let existed = std::fs::symlink_metadata(&db).is_ok();
    let served = std::sync::atomic::AtomicBool::new(false);
    let result = serve_db(args, Database::Sqlite(db.clone()), &served).await;
    let never_served = result.is_err() && !served.load(std::sync::atomic::Ordering::SeqCst);
    if temporary || (never_served && !existed && socketeer_hub::holds_nothing(&db)) {
        socketeer_hub::remove_database(&db);
    }
    result
}

async fn serve_db(
    mut args: HubArgs,
    db: Database,
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
    args.serve.max_line = args.serve.max_line.max(record::MAX_LINE as u32);
    if args.bus.is_some() && db.sqlite().is_some() {
        return Err(UsageError(
            "hub: --bus joins nodes that share one store: give --db postgres://… too".into(),
        )
        .into());
    }
    let config = config(&args, db);
    if let Some(bus) = &config.bus {
        bus.validate()
            .map_err(|why| UsageError(format!("hub: --bus: {why}")))?;
    }
    let shown = config.db.to_string();
    let hub = Hub::open(config).with_context(|| format!("hub: --db {shown}"))?;
    let status = serve_all(&args, &hub, served).await;
    // Every connection has finished: the writer commits what is queued and stops.
    hub.close().await?;
    status
}

/// The hub's configuration from the flags.
fn config(args: &HubArgs, db: Database) -> HubConfig {
    let mut config = HubConfig::new(db);
    config.bus = args.bus.as_ref().map(|url| socketeer_hub::bus::BusConfig {
        url: url.clone(),
        creds: args.bus_creds.clone(),
        node: args.node.clone().unwrap_or_else(|| {
            format!("{}-{}", crate::guard::default_device(), std::process::id())
        }),
    });
    config.durability = match args.sync {
        SyncArg::Full => Durability::Full,
        SyncArg::Normal => Durability::Normal,
    };
    config.retention = (!args.retention.is_zero()).then_some(args.retention);
    config.max_batch = args.max_batch as usize;
    config.cardinality = Cardinality {
        devices: args.max_devices as usize,
        streams: args.max_streams as usize,
        fields: args.max_fields as usize,
    };
    config.max_image = args.max_image as usize;
    config.image_retention = (!args.image_retention.is_zero()).then_some(args.image_retention);
    config.image_budget = (args.image_budget > 0).then_some(args.image_budget);
    config.influx_precision = match args.influx_precision {
        PrecisionArg::Ns => Precision::Ns,
        PrecisionArg::Us => Precision::Us,
        PrecisionArg::Ms => Precision::Ms,
        PrecisionArg::S => Precision::S,
    };
    config
}

/// Binds ingest and Influx endpoints, serves them until a signal, drains them together.
async fn serve_all(
    args: &HubArgs,
    hub: &Hub,
    served: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<i32> {
    let mut runner = Runner::new()?;
    let ingest_at = runner
        .add(
            &args.serve,
            Service {
                name: "hub",
                default_endpoint: DEFAULT_INGEST,
                make_handler: hub.ingest_handler(),
                datagram: None::<NoDatagrams>,
                auth_failures: Some(hub.auth_failure_hook()),
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
        let handler = hub.influx_handler();
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
        Some(serve_http(args, hub, &mut runner).await?)
    };
    if args.demo {
        let robots_to = ingest_at
            .iter()
            .find(|ep| ep.is_stream())
            .context("hub: --demo needs a stream ingest endpoint")?;
        let mut fleet = crate::simulate::demo_fleet(
            robots_to,
            args.demo_robots,
            args.demo_rate,
            args.demo_camera_fps,
        );
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
async fn serve_http(args: &HubArgs, hub: &Hub, runner: &mut Runner) -> anyhow::Result<String> {
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
    let config = HttpConfig {
        token,
        hosts: args.http_hosts.clone(),
        ingest_no_auth: args.http_ingest_no_auth,
        access: crate::guard::access_list(&args.serve.guard)?,
        max_conns: args.http_max_conns.map(|n| n as usize),
        timeout: args.http_timeout,
    };
    runner.spawn(hub.serve_http(listener, config, runner.shutdown().clone())?);
    Ok(url)
}

/// `socketeer hub migrate`: a SQLite history into PostgreSQL, with progress on stderr.
async fn migrate(args: crate::cli::MigrateArgs) -> anyhow::Result<i32> {
    let from = match Database::parse(&args.from) {
        Ok(Database::Sqlite(path)) => path,
        _ => {
            return Err(UsageError(format!(
                "hub migrate: --from {}: give the SQLite database (FILE or sqlite://FILE)",
                args.from
            ))
            .into());
        }
    };
    let to = match Database::parse(&args.to) {
        Ok(Database::Postgres(url)) => url,
        Ok(Database::Sqlite(_)) => {
            return Err(UsageError(
                "hub migrate: --to: give a PostgreSQL URL (postgres://user@host/db)".into(),
            )
            .into());
        }
        Err(why) => return Err(UsageError(format!("hub migrate: --to: {why}")).into()),
    };
    errln!("socketeer: hub migrate: {} -> {to}", from.display());
    let shown = to.to_string();
    let summary = tokio::task::spawn_blocking(move || {
        let mut last = std::time::Instant::now();
        let mut first = true;
        socketeer_hub::moving::sqlite_to_postgres(&from, &to, |p| {
            let done = p.samples.0 >= p.samples.1 && p.frames.0 >= p.frames.1;
            if first || done || last.elapsed() >= std::time::Duration::from_secs(1) {
                errln!(
                    "socketeer: hub migrate: samples {}/{}, frames {}/{}",
                    p.samples.0,
                    p.samples.1,
                    p.frames.0,
                    p.frames.1
                );
                last = std::time::Instant::now();
                first = false;
            }
        })
    })
    .await
    .context("hub migrate: the copy stopped")?
    .with_context(|| format!("hub migrate: {shown}"))?;
    if !summary.short.is_empty() {
        errln!(
            "socketeer: hub migrate: check failed: {} has fewer records than the source for {}",
            shown,
            summary.short.join(", ")
        );
        return Ok(1);
    }
    outln!(
        "migrated {} devices: {} samples and {} frames copied now ({} and {} in all); counts checked",
        summary.devices,
        summary.copied.0,
        summary.copied.1,
        summary.total.0,
        summary.total.1
    )?;
    Ok(0)
}
