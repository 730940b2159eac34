//! The hub's counters, and their Prometheus text (`GET /metrics`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::wire::Reason;

/// Counters for `/metrics` and the logs.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Records committed.
    pub(crate) records: AtomicU64,
    /// Acknowledgements sent.
    pub(crate) acks: AtomicU64,
    /// Resent records found committed before.
    pub(crate) duplicates: AtomicU64,
    /// Lines refused.
    pub(crate) rejected: AtomicU64,
    /// Influx lines taken (stored without acknowledgement).
    pub(crate) influx_lines: AtomicU64,
    /// Influx lines of datagrams dropped because the writer's queue had no room.
    pub(crate) influx_dropped: AtomicU64,
    /// Connections that failed authentication.
    pub(crate) auth_failures: Arc<AtomicU64>,
    /// Live feed viewers now.
    pub(crate) viewers: AtomicU64,
    /// Live feed viewers dropped for falling behind.
    pub(crate) viewers_dropped: AtomicU64,
    /// Foxglove WebSocket clients now.
    pub(crate) foxglove_clients: AtomicU64,
    /// Foxglove clients dropped for falling behind.
    pub(crate) foxglove_dropped: AtomicU64,
    /// Refused lines by reason.
    reasons: Mutex<BTreeMap<&'static str, u64>>,
}

impl Stats {
    /// Counts a refused line under its reason.
    pub(crate) fn reject(&self, reason: Reason) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        *self
            .reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason.label())
            .or_default() += 1;
    }

    /// Refused lines by reason label, in label order.
    pub(crate) fn rejected_by_reason(&self) -> Vec<(&'static str, u64)> {
        let reasons = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        reasons.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// Gauges that live elsewhere than [`Stats`], read when `/metrics` is asked for.
pub(crate) struct Gauges {
    /// Records waiting for the writer or being committed.
    pub(crate) queued: u64,
    /// Devices with an open ingest connection.
    pub(crate) connected: u64,
    /// HTTP connections open, refused at the cap, and closed for stalling.
    pub(crate) http: [u64; 3],
    /// With a bus: 1 while NATS is reachable, else 0; `None` without one.
    pub(crate) bus_connected: Option<u64>,
}

/// The Prometheus text format of everything counted.
pub(crate) fn prometheus(stats: &Stats, gauges: &Gauges) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP socketeer_hub_{name} {help}\n# TYPE socketeer_hub_{name} {kind}\nsocketeer_hub_{name} {value}\n"
        ));
    };
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    metric(
        "records_total",
        "counter",
        "Records committed.",
        load(&stats.records),
    );
    metric(
        "acks_total",
        "counter",
        "Acknowledgements sent.",
        load(&stats.acks),
    );
    metric(
        "duplicates_total",
        "counter",
        "Resent records found committed before.",
        load(&stats.duplicates),
    );
    metric(
        "influx_lines_total",
        "counter",
        "InfluxDB lines taken.",
        load(&stats.influx_lines),
    );
    metric(
        "writer_queued_records",
        "gauge",
        "Records waiting for the writer or being committed.",
        gauges.queued,
    );
    metric(
        "influx_dropped_total",
        "counter",
        "InfluxDB lines of datagrams dropped because the writer's queue was full.",
        load(&stats.influx_dropped),
    );
    metric(
        "connected_devices",
        "gauge",
        "Devices with an open ingest connection.",
        gauges.connected,
    );
    metric(
        "auth_failures_total",
        "counter",
        "Connections that failed authentication.",
        load(&stats.auth_failures),
    );
    metric(
        "live_viewers",
        "gauge",
        "Live feed viewers.",
        load(&stats.viewers),
    );
    metric(
        "live_viewers_dropped_total",
        "counter",
        "Live viewers dropped for falling behind.",
        load(&stats.viewers_dropped),
    );
    metric(
        "foxglove_clients",
        "gauge",
        "Foxglove WebSocket clients.",
        load(&stats.foxglove_clients),
    );
    metric(
        "foxglove_clients_dropped_total",
        "counter",
        "Foxglove clients dropped for falling behind.",
        load(&stats.foxglove_dropped),
    );
    metric(
        "http_connections",
        "gauge",
        "HTTP connections open.",
        gauges.http[0],
    );
    metric(
        "http_connections_refused_total",
        "counter",
        "HTTP connections refused at the connection cap.",
        gauges.http[1],
    );
    metric(
        "http_connections_stalled_total",
        "counter",
        "HTTP connections closed for not sending a request head in time or moving no byte.",
        gauges.http[2],
    );
    if let Some(connected) = gauges.bus_connected {
        metric(
            "bus_connected",
            "gauge",
            "1 while the bus to other hub nodes (NATS) is reachable.",
            connected,
        );
    }
    out.push_str("# HELP socketeer_hub_rejected_lines_total Lines refused, by reason.\n");
    out.push_str("# TYPE socketeer_hub_rejected_lines_total counter\n");
    for (reason, count) in stats.rejected_by_reason() {
        out.push_str(&format!(
            "socketeer_hub_rejected_lines_total{{reason=\"{reason}\"}} {count}\n"
        ));
    }
    out
}
