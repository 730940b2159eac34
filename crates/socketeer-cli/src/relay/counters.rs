//! The relay's counters: connections, bytes each way, target failures and why connections
//! ended, printed as Prometheus text (or one JSON object) on SIGUSR1 and at exit.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a relayed connection (or datagram session) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Both sides finished sending and closed.
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// The client's side failed (reset, broken pipe).
    ClientFailed,
    /// The target's side failed after connecting.
    TargetFailed,
    /// The target could not be reached (refused, timed out, TLS or key refused).
    NoTarget,
    /// The relay was shutting down.
    Shutdown,
}

impl End {
    const ALL: [End; 6] = [
        End::Closed,
        End::Idle,
        End::ClientFailed,
        End::TargetFailed,
        End::NoTarget,
        End::Shutdown,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Idle => "idle",
            End::ClientFailed => "client_error",
            End::TargetFailed => "target_error",
            End::NoTarget => "target_unreachable",
            End::Shutdown => "shutdown",
        }
    }
}

/// Why the target could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreachable {
    Refused,
    Timeout,
    Tls,
    Auth,
    Other,
}

impl Unreachable {
    const ALL: [Unreachable; 5] = [
        Unreachable::Refused,
        Unreachable::Timeout,
        Unreachable::Tls,
        Unreachable::Auth,
        Unreachable::Other,
    ];

    pub(crate) fn of(err: &socketeer::Error) -> Unreachable {
        match err.kind() {
            socketeer::ErrorKind::Timeout => Unreachable::Timeout,
            socketeer::ErrorKind::Tls => Unreachable::Tls,
            socketeer::ErrorKind::Auth => Unreachable::Auth,
            _ if err
                .io_error()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused) =>
            {
                Unreachable::Refused
            }
            _ if err
                .io_error()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut) =>
            {
                Unreachable::Timeout
            }
            _ => Unreachable::Other,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Unreachable::Refused => "refused",
            Unreachable::Timeout => "timeout",
            Unreachable::Tls => "tls",
            Unreachable::Auth => "auth",
            Unreachable::Other => "other",
        }
    }
}

/// Counts for the whole relay; every field is updated with relaxed atomics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Connections accepted (and datagram sessions begun).
    pub(crate) connections: AtomicU64,
    /// Connections and sessions open now.
    pub(crate) active: AtomicU64,
    /// Bytes from clients to the target.
    pub(crate) to_target: AtomicU64,
    /// Bytes from the target to clients.
    pub(crate) to_client: AtomicU64,
    unreachable: [AtomicU64; 5],
    ended: [AtomicU64; 6],
    /// Datagrams dropped: a session's queue full, too many sessions, or an answer that could
    /// not be sent.
    pub(crate) dropped_datagrams: AtomicU64,
}

impl Counters {
    pub(crate) fn unreachable(&self, why: Unreachable) {
        let at = Unreachable::ALL.iter().position(|u| *u == why).unwrap_or(0);
        self.unreachable[at].fetch_add(1, Relaxed);
    }

    pub(crate) fn ended(&self, end: End) {
        let at = End::ALL.iter().position(|e| *e == end).unwrap_or(0);
        self.ended[at].fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition format.
    pub(crate) fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, help: &str, kind: &str, rows: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP socketeer_relay_{name} {help}");
            let _ = writeln!(out, "# TYPE socketeer_relay_{name} {kind}");
            for (labels, value) in rows {
                let _ = writeln!(out, "socketeer_relay_{name}{labels} {value}");
            }
        };
        let one = |n: &AtomicU64| vec![(String::new(), n.load(Relaxed))];
        metric(
            "connections_total",
            "Connections accepted and datagram sessions begun.",
            "counter",
            &one(&self.connections),
        );
        metric(
            "connections_active",
            "Connections and datagram sessions open now.",
            "gauge",
            &one(&self.active),
        );
        metric(
            "bytes_total",
            "Bytes relayed, by direction.",
            "counter",
            &[
                (
                    "{direction=\"to_target\"}".into(),
                    self.to_target.load(Relaxed),
                ),
                (
                    "{direction=\"to_client\"}".into(),
                    self.to_client.load(Relaxed),
                ),
            ],
        );
        let rows: Vec<(String, u64)> = Unreachable::ALL
            .iter()
            .zip(&self.unreachable)
            .map(|(u, n)| (format!("{{reason=\"{}\"}}", u.name()), n.load(Relaxed)))
            .collect();
        metric(
            "target_failures_total",
            "Connections whose target could not be reached, by reason.",
            "counter",
            &rows,
        );
        let rows: Vec<(String, u64)> = End::ALL
            .iter()
            .zip(&self.ended)
            .map(|(e, n)| (format!("{{reason=\"{}\"}}", e.name()), n.load(Relaxed)))
            .collect();
        metric(
            "ended_total",
            "Connections and sessions ended, by why.",
            "counter",
            &rows,
        );
        metric(
            "datagrams_dropped_total",
            "Datagrams dropped (a full session queue, too many sessions, an unanswerable sender).",
            "counter",
            &one(&self.dropped_datagrams),
        );
        out
    }

    /// One JSON object.
    pub(crate) fn json(&self) -> serde_json::Value {
        let by = |names: &mut dyn Iterator<Item = &'static str>, counts: &[AtomicU64]| {
            names
                .zip(counts)
                .map(|(name, n)| (name.to_owned(), serde_json::Value::from(n.load(Relaxed))))
                .collect::<serde_json::Map<_, _>>()
        };
        serde_json::json!({
            "counters": {
                "connections_total": self.connections.load(Relaxed),
                "connections_active": self.active.load(Relaxed),
                "bytes_to_target": self.to_target.load(Relaxed),
                "bytes_to_client": self.to_client.load(Relaxed),
                "target_failures": by(&mut Unreachable::ALL.iter().map(|u| u.name()), &self.unreachable),
                "ended": by(&mut End::ALL.iter().map(|e| e.name()), &self.ended),
                "datagrams_dropped": self.dropped_datagrams.load(Relaxed),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_print_as_prometheus_text_and_json() {
        let counters = Counters::default();
        counters.connections.fetch_add(3, Relaxed);
        counters.to_target.fetch_add(10, Relaxed);
        counters.unreachable(Unreachable::Refused);
        counters.ended(End::Closed);
        counters.ended(End::Closed);
        let text = counters.prometheus();
        assert!(
            text.contains("socketeer_relay_connections_total 3\n"),
            "{text}"
        );
        assert!(text.contains("socketeer_relay_bytes_total{direction=\"to_target\"} 10\n"));
        assert!(text.contains("socketeer_relay_target_failures_total{reason=\"refused\"} 1\n"));
        assert!(text.contains("socketeer_relay_ended_total{reason=\"closed\"} 2\n"));
        assert!(text.contains("# TYPE socketeer_relay_connections_active gauge\n"));
        let json = counters.json();
        assert_eq!(json["counters"]["ended"]["closed"], 2);
        assert_eq!(json["counters"]["target_failures"]["timeout"], 0);
    }
}
