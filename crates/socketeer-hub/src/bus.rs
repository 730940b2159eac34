//! The bus between hub nodes (`--bus nats://…`): what one node commits, every node shows.
//!
//! - **Live events.** Each record this node commits goes out on the NATS subject
//!   `socketeer.live.DEVICE.STREAM` (in names, `.`, `:`, `=` and the like are written `=2E`,
//!   `=3A`, `=3D`…, so one name is one subject token and a valid key), marked with the node's name; every node subscribes to
//!   `socketeer.live.>` and feeds other nodes' events into its own live feed — its dashboard's
//!   `/api/live` and its Foxglove socket see every robot, whichever node it is connected to.
//! - **Latest values.** The newest record of each (device, stream) — readings and frames with
//!   their image — is kept in the JetStream key-value bucket `socketeer_latest` (written at
//!   most four times a second per stream), so a node that starts, or comes back after NATS
//!   was away, shows every stream's latest at once.
//! - **Presence.** Which devices have a connection open on which node: the bucket
//!   `socketeer_presence`, refreshed every few seconds, entries aging out after 30 s (a node
//!   that was killed stops refreshing its own).
//!
//! The bus never stands between a robot and its acknowledgement: a record is acknowledged
//! after the store's commit; publishing is after that and never waits. Without NATS (down, or
//! not yet up) ingest and storage go on, and the cross-node view comes back with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use tokio::sync::broadcast;

use crate::live::{Committed, Newest};

/// The subject prefix of live events.
const SUBJECT: &str = "socketeer.live";
/// The header naming the node an event comes from.
const NODE_HEADER: &str = "Socketeer-Node";
/// The bucket of every stream's newest record.
const LATEST_BUCKET: &str = "socketeer_latest";
/// The bucket of which device is on which node.
const PRESENCE_BUCKET: &str = "socketeer_presence";
/// How long a presence entry lives without being refreshed.
const PRESENCE_TTL: Duration = Duration::from_secs(30);
/// How often presence is refreshed.
const PRESENCE_EVERY: Duration = Duration::from_secs(5);
/// How often the latest values are written to their bucket.
const LATEST_EVERY: Duration = Duration::from_millis(250);

/// How a hub joins the bus.
#[derive(Clone)]
pub struct BusConfig {
    /// The NATS server(s): `nats://host:4222` (several separated by commas).
    pub url: String,
    /// A NATS credentials file (`.creds`: a user JWT and its NKey seed), if the server
    /// wants one.
    pub creds: Option<std::path::PathBuf>,
    /// This node's name, as presence shows it (unique in the fleet).
    pub node: String,
}

impl std::fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusConfig")
            .field("url", &shown(&self.url))
            .field("creds", &self.creds)
            .field("node", &self.node)
            .finish()
    }
}

impl BusConfig {
    /// Checks the URL: `nats://`, `tls://` or `ws://` addresses, comma-separated.
    ///
    /// # Errors
    /// Why it is not one (without repeating a password it may hold).
    pub fn validate(&self) -> Result<(), String> {
        for part in self.url.split(',') {
            let part = part.trim();
            if !["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|scheme| part.starts_with(scheme))
            {
                return Err(format!(
                    "{}: a NATS address starts with nats:// (or tls://)",
                    shown(part)
                ));
            }
        }
        if self.node.is_empty() || self.node.len() > 64 {
            return Err("a node name is 1 to 64 characters".into());
        }
        Ok(())
    }
}

/// `url` with any password replaced by `***`.
pub(crate) fn shown(url: &str) -> String {
    url.split(',')
        .map(|part| match part.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                    None => format!("{scheme}://***@{host}"),
                },
                None => part.to_owned(),
            },
            None => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A login taken out of a NATS URL.
#[derive(Debug, PartialEq, Eq)]
enum Login {
    User(String, String),
    Token(String),
}

/// The server list without any login in it, and the login (the first one given; percent
/// escapes decoded).
fn split_login(url: &str) -> (String, Option<Login>) {
    let mut login = None;
    let servers: Vec<String> = url
        .split(',')
        .map(|part| {
            let part = part.trim();
            let Some((scheme, rest)) = part.split_once("://") else {
                return part.to_owned();
            };
            let Some((userinfo, host)) = rest.rsplit_once('@') else {
                return part.to_owned();
            };
            if login.is_none() {
                login = Some(match userinfo.split_once(':') {
                    Some((user, password)) => Login::User(unescape(user), unescape(password)),
                    None => Login::Token(unescape(userinfo)),
                });
            }
            format!("{scheme}://{host}")
        })
        .collect();
    (servers.join(","), login)
}

/// `%XX` escapes decoded (anything malformed kept as it is).
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A name as one subject token and a valid key-value key (letters, digits, `-/_`; anything
/// else as `=XX` per UTF-8 byte).
fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'/' | b'_' => out.push(b as char),
            b => out.push_str(&format!("={b:02X}")),
        }
    }
    out
}

/// A name back from its token.
fn untoken(token: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'=' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// Which node each device elsewhere is connected to, and its clock as that node knows it,
/// from the presence bucket.
#[derive(Debug, Default)]
pub(crate) struct Elsewhere {
    nodes: Mutex<HashMap<String, (String, serde_json::Value)>>,
}

impl Elsewhere {
    /// The node `device` is connected to, if another node says so.
    pub(crate) fn node(&self, device: &str) -> Option<String> {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(device)
            .map(|(node, _)| node.clone())
    }

    /// Its clock against the hubs', as the node it is connected to estimates it (`null`: none).
    pub(crate) fn clock(&self, device: &str) -> serde_json::Value {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(device)
            .map_or(serde_json::Value::Null, |(_, clock)| clock.clone())
    }
}

/// What the bus shares with the rest of the hub.
pub(crate) struct Bus {
    pub(crate) node: Arc<str>,
    pub(crate) elsewhere: Arc<Elsewhere>,
    connected: Arc<std::sync::atomic::AtomicBool>,
}

impl Bus {
    /// Whether NATS is reachable now.
    pub(crate) fn connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Joins the bus in the background (NATS may be down: it keeps trying): publishes this
    /// node's committed events and latest values, feeds other nodes' events into `live`,
    /// keeps presence. Needs a tokio runtime.
    pub(crate) fn start(
        config: &BusConfig,
        live: broadcast::Sender<Arc<Committed>>,
        newest: Arc<Newest>,
        here: Arc<crate::ingest::Presence>,
        activity: Arc<crate::store::Activity>,
        clocks: Arc<crate::clock::Clocks>,
    ) -> anyhow::Result<Bus> {
        config.validate().map_err(anyhow::Error::msg)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow::anyhow!("the bus needs a tokio runtime"))?;
        let node: Arc<str> = config.node.as_str().into();
        let bus = Bus {
            node: Arc::clone(&node),
            elsewhere: Arc::default(),
            connected: Arc::default(),
        };
        let config = config.clone();
        let elsewhere = Arc::clone(&bus.elsewhere);
        let connected = Arc::clone(&bus.connected);
        // Subscribed now, so nothing committed from here on is missed.
        let events = live.subscribe();
        runtime.spawn(async move {
            let shared = Shared {
                newest,
                here,
                elsewhere,
                connected,
                activity,
                clocks,
            };
            if let Err(err) = run(config, node, live, events, shared).await {
                tracing::error!(error = %err, "the bus stopped: this node shows only its own robots");
            }
        });
        Ok(bus)
    }
}

/// What the bus's tasks share with the rest of the hub.
struct Shared {
    newest: Arc<Newest>,
    here: Arc<crate::ingest::Presence>,
    elsewhere: Arc<Elsewhere>,
    connected: Arc<std::sync::atomic::AtomicBool>,
    /// Records per device: other nodes' count too, so every node's fleet view shows rates.
    activity: Arc<crate::store::Activity>,
    /// This node's devices' clocks, shared in presence.
    clocks: Arc<crate::clock::Clocks>,
}

async fn run(
    config: BusConfig,
    node: Arc<str>,
    live: broadcast::Sender<Arc<Committed>>,
    mut events: broadcast::Receiver<Arc<Committed>>,
    shared: Shared,
) -> anyhow::Result<()> {
    let Shared {
        newest,
        here,
        elsewhere,
        connected,
        activity,
        clocks,
    } = shared;
    let url = shown(&config.url);
    // A user and password (or a token) in the URL are taken out of it and given to the client
    // as options: the client logs the addresses it tries, and a password must not be in them.
    let (servers, login) = split_login(&config.url);
    let mut options = match (&config.creds, login) {
        (Some(path), _) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        (None, Some(Login::User(user, password))) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        (None, Some(Login::Token(token))) => async_nats::ConnectOptions::with_token(token),
        (None, None) => async_nats::ConnectOptions::new(),
    };
    options = options
        .name(format!("socketeer-hub {node}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback({
            let url = url.clone();
            let connected = Arc::clone(&connected);
            move |event| {
                let url = url.clone();
                let connected = Arc::clone(&connected);
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            connected.store(true, std::sync::atomic::Ordering::Relaxed);
                            tracing::warn!(bus = %url, "NATS connected: live events cross nodes");
                        }
                        async_nats::Event::Disconnected => {
                            connected.store(false, std::sync::atomic::Ordering::Relaxed);
                            tracing::warn!(
                                bus = %url,
                                "NATS unreachable: ingest and storage go on; other nodes' robots are not shown live until it is back"
                            );
                        }
                        async_nats::Event::ServerError(err) => {
                            tracing::warn!(bus = %url, error = %err, "NATS refused this node");
                        }
                        async_nats::Event::ClientError(err) => {
                            tracing::warn!(bus = %url, error = %err, "NATS refused this node");
                        }
                        other => tracing::debug!(bus = %url, event = %other, "NATS"),
                    }
                }
            }
        });
    let client = options
        .connect(servers.as_str())
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let js = async_nats::jetstream::new(client.clone());

    // Other nodes' events into this node's live feed.
    let mut incoming = client
        .subscribe(format!("{SUBJECT}.>"))
        .await
        .map_err(|e| anyhow::anyhow!("{url}: subscribe: {e}"))?;
    {
        let node = Arc::clone(&node);
        let live = live.clone();
        let newest = Arc::clone(&newest);
        tokio::spawn(async move {
            let activity = activity;
            while let Some(message) = incoming.next().await {
                let from = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(NODE_HEADER))
                    .map(|v| v.as_str().to_owned());
                let Some(from) = from.filter(|from| **from != *node) else {
                    continue; // ours, or nobody's
                };
                match Committed::from_wire(&message.payload, from.into()) {
                    Some(event) => {
                        let event = Arc::new(event);
                        activity.committed(&event.device, 1, crate::store::now_secs() as u64);
                        newest.offer(&event);
                        let _ = live.send(event);
                    }
                    None => {
                        tracing::debug!(subject = %message.subject, "not a live event; ignored")
                    }
                }
            }
        });
    }

    // The buckets, once JetStream answers (NATS may come up later than this node).
    let (latest, presence) = loop {
        match buckets(&js).await {
            Ok(buckets) => break buckets,
            Err(err) => {
                tracing::debug!(error = %err, "JetStream not ready; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    // Every node's latest values into this node's newest, and presence into `elsewhere`.
    tokio::spawn(watch_latest(latest.clone(), Arc::clone(&node), newest));
    tokio::spawn(watch_presence(
        presence.clone(),
        Arc::clone(&node),
        elsewhere,
    ));
    tokio::spawn(keep_presence(presence, Arc::clone(&node), here, clocks));

    // This node's events out: each at once on its subject, and the newest of each stream to
    // the bucket every LATEST_EVERY.
    let mut dirty: HashMap<String, Arc<Committed>> = HashMap::new();
    let mut flush = tokio::time::interval(LATEST_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) if event.origin.is_none() => {
                    if client.connection_state() != async_nats::connection::State::Connected {
                        continue; // not buffered: what is missed live is in the store
                    }
                    let key = format!("{}.{}", token(&event.device), token(&event.stream));
                    let payload = event.to_wire();
                    if payload.len() as i64 > client.server_info().max_payload as i64 - 1024 {
                        tracing::debug!(bytes = payload.len(), "event larger than NATS takes; not shared live");
                        continue;
                    }
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(NODE_HEADER, &*node);
                    if let Err(err) = client
                        .publish_with_headers(format!("{SUBJECT}.{key}"), headers, payload)
                        .await
                    {
                        tracing::debug!(error = %err, "live event not published");
                    }
                    dirty.insert(key, event);
                }
                Ok(_) => {} // another node's: it publishes its own
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "the bus fell behind the live feed");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = flush.tick() => {
                for (key, event) in dirty.drain() {
                    if let Err(err) = latest.put(&key, event.to_wire()).await {
                        tracing::debug!(error = %err, "latest value not kept");
                    }
                }
            }
        }
    }
    Ok(())
}

/// The two buckets, created if missing.
async fn buckets(js: &async_nats::jetstream::Context) -> anyhow::Result<(kv::Store, kv::Store)> {
    let latest = bucket(js, LATEST_BUCKET, Duration::from_secs(7 * 86_400)).await?;
    let presence = bucket(js, PRESENCE_BUCKET, PRESENCE_TTL).await?;
    Ok((latest, presence))
}

/// A key-value bucket (one value per key, aging out after `max_age`), created if missing.
/// Made as its stream, the way every NATS client lays a bucket out, rather than through the
/// client's `create_key_value`, which first asks for account details that servers before 2.10
/// answer in a shape this client does not read.
async fn bucket(
    js: &async_nats::jetstream::Context,
    name: &str,
    max_age: Duration,
) -> anyhow::Result<kv::Store> {
    use async_nats::jetstream::stream;
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await?;
    Ok(js.get_key_value(name).await?)
}

/// Other nodes' latest values into `newest` (all of them first, then as they change); again
/// after NATS comes back.
async fn watch_latest(latest: kv::Store, node: Arc<str>, newest: Arc<Newest>) {
    loop {
        match latest.watch_all().await {
            Ok(mut watch) => {
                while let Some(entry) = watch.next().await {
                    let Ok(entry) = entry else { break };
                    if entry.operation != kv::Operation::Put {
                        continue;
                    }
                    // From any node: kept if it is the newest of its stream.
                    if let Some(event) = Committed::from_wire(&entry.value, Arc::clone(&node)) {
                        newest.offer(&Arc::new(event));
                    }
                }
            }
            Err(err) => tracing::debug!(error = %err, "cannot watch the latest values"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The presence bucket into `elsewhere`: device -> node.
async fn watch_presence(presence: kv::Store, node: Arc<str>, elsewhere: Arc<Elsewhere>) {
    loop {
        match presence.watch_all().await {
            Ok(mut watch) => {
                while let Some(entry) = watch.next().await {
                    let Ok(entry) = entry else { break };
                    let mut nodes = elsewhere.nodes.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(device) = untoken(&entry.key) else {
                        continue;
                    };
                    match entry.operation {
                        kv::Operation::Put => {
                            let value = serde_json::from_slice::<serde_json::Value>(&entry.value)
                                .unwrap_or_default();
                            let on = value
                                .get("node")
                                .and_then(|n| n.as_str())
                                .map(str::to_owned);
                            match on {
                                Some(on) if on != *node => {
                                    let clock = value.get("clock").cloned().unwrap_or_default();
                                    nodes.insert(device, (on, clock));
                                }
                                _ => {
                                    nodes.remove(&device);
                                }
                            }
                        }
                        kv::Operation::Delete | kv::Operation::Purge => {
                            nodes.remove(&device);
                        }
                    }
                }
            }
            Err(err) => tracing::debug!(error = %err, "cannot watch presence"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// This node's connected devices, refreshed in the presence bucket; those that left, removed
/// (if the entry is still this node's).
async fn keep_presence(
    presence: kv::Store,
    node: Arc<str>,
    here: Arc<crate::ingest::Presence>,
    clocks: Arc<crate::clock::Clocks>,
) {
    let mut ours: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(PRESENCE_EVERY);
    loop {
        tick.tick().await;
        let now: Vec<String> = here.snapshot().into_keys().collect();
        for device in &now {
            let value = serde_json::json!({
                "node": &*node,
                "at": crate::store::now_secs(),
                "clock": clocks.estimate(device),
            });
            let _ = presence.put(token(device), value.to_string().into()).await;
        }
        for device in ours.iter().filter(|d| !now.contains(d)) {
            let still_ours = presence
                .get(token(device))
                .await
                .ok()
                .flatten()
                .is_some_and(|v: bytes::Bytes| {
                    serde_json::from_slice::<serde_json::Value>(&v[..])
                        .ok()
                        .and_then(|v| v.get("node")?.as_str().map(|n| n == &*node))
                        .unwrap_or(false)
                });
            if still_ours {
                let _ = presence.delete(token(device)).await;
            }
        }
        ours = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_token_and_passwords_are_not_shown() {
        assert_eq!(token("rover-1"), "rover-1");
        assert_eq!(token("/robot/imu.raw"), "/robot/imu=2Eraw");
        assert_eq!(token("a*b>c=:"), "a=2Ab=3Ec=3D=3A");
        for name in ["rover-1", "/robot/imu.raw", "a*b>c=:", "ünï"] {
            assert_eq!(untoken(&token(name)).as_deref(), Some(name));
        }
        assert_eq!(
            shown("nats://hub:s3cret@10.0.0.1:4222,nats://10.0.0.2:4222"),
            "nats://hub:***@10.0.0.1:4222,nats://10.0.0.2:4222"
        );
        assert_eq!(shown("nats://tok3n@h:4222"), "nats://***@h:4222");
        assert_eq!(
            split_login("nats://hub:p%40ss@10.0.0.1:4222, nats://10.0.0.2:4222"),
            (
                "nats://10.0.0.1:4222,nats://10.0.0.2:4222".into(),
                Some(Login::User("hub".into(), "p@ss".into()))
            )
        );
        assert_eq!(
            split_login("nats://t0k@h:1"),
            ("nats://h:1".into(), Some(Login::Token("t0k".into())))
        );
        assert_eq!(split_login("nats://h:1"), ("nats://h:1".into(), None));
    }
}
