//! A running hub: the store open and its writer thread started, and the pieces the caller
//! serves on listeners it binds — the ingest handler, the Influx handler, the HTTP server —
//! all sharing one store, one set of counters and one live feed. [`Hub::close`] stops the
//! writer last, after every connection has finished, so what was acknowledged is committed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;

use crate::config::{HttpConfig, HubConfig};
use crate::influx::InfluxHandler;
use crate::ingest::{Ingest, IngestHandler, Stats};
use crate::store::{Activity, Store, StoreConfig};

/// Live events buffered for viewers (a viewer further behind is dropped).
const LIVE_CAPACITY: usize = 4096;

/// An open hub. Serve its handlers on listeners of your own, then [`close`](Hub::close) it.
///
/// ```no_run
/// # async fn run() -> anyhow::Result<()> {
/// use socketeer::{Endpoint, Listener, BindOptions, Server, Shutdown};
///
/// let hub = socketeer_hub::Hub::open(socketeer_hub::HubConfig::new("fleet.db"))?;
/// let shutdown = Shutdown::new();
/// let listener = Listener::bind(&"127.0.0.1:7000".parse::<Endpoint>()?, &BindOptions::default()).await?;
/// let robots = Server::new(listener, hub.ingest_handler()).shutdown(shutdown.clone());
/// let http = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let api = tokio::spawn(hub.serve_http(http, socketeer_hub::HttpConfig::default(), shutdown.clone())?);
/// robots.serve_forever().await?; // until shutdown.trigger()
/// api.await??;
/// hub.close().await?;
/// # Ok(()) }
/// ```
pub struct Hub {
    ingest: Arc<Ingest>,
    activity: Arc<Activity>,
    live: tokio::sync::broadcast::Sender<Arc<crate::live::Committed>>,
    writer: std::thread::JoinHandle<()>,
    config: HubConfig,
    /// The Foxglove WebSocket's channels, and this run's session id.
    foxglove: Arc<crate::foxglove::Channels>,
    /// Every stream's newest record (from every node, with a bus).
    newest: Arc<crate::live::Newest>,
    /// The bus to other nodes, if any.
    #[cfg(feature = "nats")]
    bus: Option<Arc<crate::bus::Bus>>,
}

impl Hub {
    /// Opens (creating and migrating) the database and starts the writer thread.
    ///
    /// # Errors
    /// A configuration value that cannot work, or a database that cannot be opened or
    /// migrated, with why.
    pub fn open(config: HubConfig) -> anyhow::Result<Hub> {
        config.validate()?;
        let (live, _) = tokio::sync::broadcast::channel(LIVE_CAPACITY);
        let foxglove = Arc::new(crate::foxglove::Channels::new()?);
        let newest = Arc::new(crate::live::Newest::default());
        let retired: crate::store::Retired = {
            let foxglove = Arc::clone(&foxglove);
            let newest = Arc::clone(&newest);
            Arc::new(move |streams| {
                newest.retire(&streams);
                foxglove.retire(&streams);
            })
        };
        let activity = Arc::new(Activity::default());
        let (store, writer) = Store::open(StoreConfig {
            path: config
                .db
                .sqlite()
                .map(ToOwned::to_owned)
                .unwrap_or_default(),
            postgres: match &config.db {
                crate::config::Database::Postgres(url) => Some(url.clone()),
                crate::config::Database::Sqlite(_) => None,
            },
            durability: config.durability,
            retention: config.retention,
            max_batch: config.max_batch,
            live: Some(live.clone()),
            newest: Some(Arc::clone(&newest)),
            activity: Arc::clone(&activity),
            queue: config.queue,
            cardinality: config.cardinality,
            images: crate::store::ImageLimits {
                retention: config.image_retention,
                budget: config.image_budget,
            },
            retention_every: config.retention_every,
            on_retired: Some(retired),
        })?;
        tracing::info!(db = %config.db, sync = ?config.durability, retention = ?config.retention.unwrap_or_default(), "storage open");
        let ingest = Arc::new(Ingest {
            store,
            stats: Arc::new(Stats::default()),
            presence: Arc::default(),
            max_image: config.max_image,
            image_room: Ingest::image_room(config.max_image),
            clocks: Arc::default(),
        });
        #[cfg(feature = "nats")]
        let bus = match &config.bus {
            Some(bus) => {
                tracing::info!(bus = %crate::bus::shown(&bus.url), node = %bus.node, "joining the bus");
                Some(Arc::new(crate::bus::Bus::start(
                    bus,
                    live.clone(),
                    Arc::clone(&newest),
                    Arc::clone(&ingest.presence),
                    Arc::clone(&activity),
                    Arc::clone(&ingest.clocks),
                )?))
            }
            None => None,
        };
        Ok(Hub {
            newest,
            #[cfg(feature = "nats")]
            bus,
            ingest,
            activity,
            live,
            writer,
            config,
            foxglove,
        })
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// A handler for robots' ingest connections (JSON lines in, acknowledgements out): one
    /// clone per connection, e.g. `Server::new(listener, hub.ingest_handler())`.
    pub fn ingest_handler(&self) -> impl Fn() -> IngestHandler + Clone + Send + Sync + 'static {
        let ingest = Arc::clone(&self.ingest);
        move || IngestHandler(Arc::clone(&ingest))
    }

    /// A handler for InfluxDB line protocol, over stream connections and datagrams alike.
    pub fn influx_handler(&self) -> InfluxHandler {
        InfluxHandler {
            ingest: Arc::clone(&self.ingest),
            precision: self.config.influx_precision,
        }
    }

    /// A hook for an ingest server's gate: counts failed authentications, per device claimed.
    pub fn auth_failure_hook(&self) -> socketeer::AuthFailureHook {
        let total = Arc::clone(&self.ingest.stats.auth_failures);
        let activity = Arc::clone(&self.activity);
        socketeer::AuthFailureHook::new(move |device| {
            total.fetch_add(1, Ordering::Relaxed);
            if let Some(device) = device {
                activity.auth_failed(device);
            }
        })
    }

    /// The HTTP API, dashboard and live feed on `listener`, until `shutdown` is triggered; its
    /// connections are the shutdown's tasks, drained with the others.
    ///
    /// # Errors
    /// A configuration value that cannot work: a listener beyond loopback without a token.
    /// The returned future fails only if the listener does.
    pub fn serve_http(
        &self,
        listener: tokio::net::TcpListener,
        config: HttpConfig,
        shutdown: socketeer::Shutdown,
    ) -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static>
    {
        config.validate()?;
        let bound = listener.local_addr().context("the HTTP listener")?;
        if config.token.is_none() && !bound.ip().is_loopback() {
            anyhow::bail!("http {bound}: beyond loopback the API needs a token");
        }
        let api = Arc::new(crate::http::Api {
            ingest: Arc::clone(&self.ingest),
            activity: Arc::clone(&self.activity),
            live: self.live.clone(),
            token: config.token,
            shutdown: shutdown.clone(),
            access: config.access,
            token_failures: crate::http::TokenFailures::default(),
            ingest_no_auth: config.ingest_no_auth,
            hosts: config
                .hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            web: Arc::default(),
            queries: Arc::new(tokio::sync::Semaphore::new(crate::http::QUERIES_AT_ONCE)),
            uploads: Arc::new(tokio::sync::Semaphore::new(crate::http::UPLOADS_AT_ONCE)),
            body_deadline: config.timeout * 3,
            foxglove: Arc::clone(&self.foxglove),
            newest: Arc::clone(&self.newest),
            #[cfg(feature = "nats")]
            bus: self.bus.clone(),
        });
        let router = crate::http::router(Arc::clone(&api));
        let limits = crate::web::Limits::for_this_process(config.max_conns, config.timeout);
        Ok(crate::web::serve(
            listener,
            router,
            shutdown,
            limits,
            Arc::clone(&api.web),
        ))
    }

    /// Stops the writer once every handler handed out has been dropped (serve them to the end
    /// first), after it commits what is queued.
    ///
    /// # Errors
    /// The writer thread panicked.
    pub async fn close(self) -> anyhow::Result<()> {
        let Hub { ingest, writer, .. } = self;
        drop(ingest);
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .context("hub: the storage thread")?
            .map_err(|_| anyhow::anyhow!("hub: the storage thread panicked"))?;
        tracing::info!("storage closed");
        Ok(())
    }
}
