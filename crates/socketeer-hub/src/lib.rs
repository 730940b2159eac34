//! The socketeer telemetry hub as a library: robots send readings and detection results as
//! JSON lines (or InfluxDB line protocol); each record is committed to SQLite — or, for a fleet
//! of hub nodes, to PostgreSQL ([`config::Database`]) — before it is acknowledged, and shown
//! through an HTTP API, a live feed, a dashboard and a Foxglove WebSocket; nodes share their
//! live events over NATS ([`bus`]).
//!
//! Open a [`Hub`] with a [`HubConfig`], serve its handlers on listeners you bind (with the
//! `socketeer` library's [`Server`](socketeer::Server)), serve its HTTP side, and
//! [`close`](Hub::close) it after they have drained. The `socketeer hub` command is exactly
//! that, with flags mapped onto the configuration.
//!
//! ```no_run
//! use socketeer::{BindOptions, Listener, Server, Shutdown};
//! use socketeer_hub::publisher::{Publisher, PublisherConfig, Recovered};
//! use socketeer_hub::{HttpConfig, Hub, HubConfig};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! // The hub: a store, robots' ingest on 7000, the API and dashboard on 8080.
//! let hub = Hub::open(HubConfig::new("fleet.db"))?;
//! let shutdown = Shutdown::new();
//! let listener = Listener::bind(&"127.0.0.1:7000".parse()?, &BindOptions::default()).await?;
//! let robots = Server::new(listener, hub.ingest_handler()).shutdown(shutdown.clone());
//! let http = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! tokio::spawn(hub.serve_http(http, HttpConfig::default(), shutdown.clone())?);
//! let served = tokio::spawn(robots.serve_forever());
//!
//! // A robot: every record numbered, kept until committed, resent after a reconnect.
//! let mut config = PublisherConfig::new("127.0.0.1:7000".parse()?, "run-1");
//! config.device = Some("rover-1".into());
//! let (publisher, delivery) =
//!     Publisher::start(config, None, Recovered::<()>::default(), |e| eprintln!("{e}"));
//! publisher.publish(br#"{"stream":"imu","values":{"ax":0.1,"az":9.81}}"#, ()).await?;
//! publisher.end()?;
//! let report = delivery.await?; // once every record is settled
//! assert_eq!(report.acknowledged, 1);
//!
//! shutdown.trigger(); // then close the hub once its servers have drained: the writer last
//! served.await??;
//! hub.close().await?;
//! # Ok(()) }
//! ```
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | [`HubConfig`], [`HttpConfig`]: plain values, validated |
//! | `hub` | [`Hub`]: opening, the handlers, closing (writer last) |
//! | [`record`] | what a robot sends, parsed and checked: [`record::Record`], limits |
//! | [`wire`] | the ingest protocol's answers and refusal reasons, as types |
//! | [`publisher`] | [`Publisher`]: a robot's side — numbering, window, reconnect, resend |
//! | `ingest` | the ingest connection: lines in, answers out in order |
//! | [`influx`] | InfluxDB line protocol in (Telegraf) |
//! | `store` | the store, SQLite or PostgreSQL: one writer thread, group commit, reads |
//! | [`bus`] | NATS between hub nodes: live events, every stream's newest, presence |
//! | [`moving`] | a SQLite history into PostgreSQL (`socketeer hub migrate`) |
//! | `live` | the live feed: committed records to viewers, pictures latest-only |
//! | `http`, `web` | the API, dashboard and live feed; the HTTP listener's limits |

#[cfg(feature = "nats")]
pub mod bus;
pub mod clock;
pub mod config;
mod foxglove;
mod http;
mod hub;
pub mod influx;
mod ingest;
mod live;
mod metrics;
pub mod publisher;
pub mod record;
pub mod recording;
mod store;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
mod web;
pub mod wire;

/// Moving a single-machine SQLite history into PostgreSQL (`socketeer hub migrate`).
#[cfg(feature = "postgres")]
pub mod moving {
    pub use crate::store::pg::moving::{MoveProgress, MoveSummary, sqlite_to_postgres};
}

pub use config::{ConfigError, HttpConfig, HubConfig};
pub use hub::Hub;
pub use influx::InfluxHandler;
pub use ingest::IngestHandler;
pub use publisher::{Publisher, PublisherConfig};
pub use store::{holds_nothing, now_secs, remove_database};
