//! The socketeer telemetry hub as a library: robots send readings and detection results as
//! JSON lines (or InfluxDB line protocol); each record is committed to SQLite before it is
//! acknowledged, and shown through an HTTP API, a live feed and a dashboard.
//!
//! Open a [`Hub`] with a [`HubConfig`], serve its handlers on listeners you bind (with the
//! `socketeer` library's [`Server`](socketeer::Server)), serve its HTTP side, and
//! [`close`](Hub::close) it after they have drained. The `socketeer hub` command is exactly
//! that, with flags mapped onto the configuration.
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
//! | `store` | the SQLite store: one writer thread, group commit, reads |
//! | `http`, `web` | the API, dashboard and live feed; the HTTP listener's limits |

pub mod config;
mod http;
mod hub;
pub mod influx;
mod ingest;
mod metrics;
pub mod publisher;
pub mod record;
mod store;
mod web;
pub mod wire;

pub use config::{ConfigError, HttpConfig, HubConfig};
pub use hub::Hub;
pub use influx::InfluxHandler;
pub use ingest::IngestHandler;
pub use publisher::{Publisher, PublisherConfig};
pub use store::{holds_nothing, now_secs, remove_database};
