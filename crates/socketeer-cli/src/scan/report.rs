//! Printing a finished scan: a table (default), one JSON document, or nmap's greppable lines.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::engine::{Counters, Finding, Outcome, Plan, State};
use super::ports::Services;
use super::targets::Host;

/// Everything a report is made from.
pub(crate) struct Report<'a> {
    pub(crate) hosts: &'a [Host],
    pub(crate) plan: &'a Plan,
    pub(crate) finding: &'a Finding,
    pub(crate) counters: &'a Counters,
    pub(crate) services: Services,
    pub(crate) show_all: bool,
    pub(crate) ports_text: String,
    pub(crate) started_at: time::OffsetDateTime,
    pub(crate) elapsed: Duration,
    pub(crate) fd_limit: u64,
}

/// One port's line.
struct PortLine {
    port: u16,
    outcome: Outcome,
    service: Option<&'static str>,
    rtt: Option<Duration>,
}

/// One host's results.
struct HostResult<'a> {
    host: &'a Host,
    /// The ports to show (open ones, or all with --all), ascending.
    shown: Vec<PortLine>,
    /// Ports per state.
    states: BTreeMap<State, u64>,
    /// Ports per (state, reason), for "not shown" lines.
    reasons: BTreeMap<(State, &'static str), u64>,
    /// Ports not probed (the scan was interrupted).
    not_scanned: u64,
    index: usize,
}

impl<'a> Report<'a> {
    fn results(&self) -> Vec<HostResult<'a>> {
        let ports = self.plan.ports.len();
        // Port positions sorted by port number, for ascending output.
        let mut by_number: Vec<usize> = (0..ports).collect();
        by_number.sort_unstable_by_key(|&pos| self.plan.ports[pos]);
        (0..self.hosts.len())
            .map(|index| {
                let base = (index * ports) as u64;
                let mut result = HostResult {
                    host: &self.hosts[index],
                    shown: Vec::new(),
                    states: BTreeMap::new(),
                    reasons: BTreeMap::new(),
                    not_scanned: 0,
                    index,
                };
                for &pos in &by_number {
                    let at = base + pos as u64;
                    let outcome = self.finding.outcome(at);
                    if outcome == Outcome::Pending {
                        result.not_scanned += 1;
                        continue;
                    }
                    let state = outcome.state();
                    *result.states.entry(state).or_default() += 1;
                    *result.reasons.entry((state, outcome.reason())).or_default() += 1;
                    if self.show_all || state == State::Open {
                        let port = self.plan.ports[pos];
                        let rtt = self
                            .finding
                            .open_rtts
                            .binary_search_by_key(&at, |&(i, _)| i)
                            .ok()
                            .map(|i| self.finding.open_rtts[i].1);
                        result.shown.push(PortLine {
                            port,
                            outcome,
                            service: self.services.name(port),
                            rtt,
                        });
                    }
                }
                result
            })
            .collect()
    }

    fn count(result: &HostResult<'_>, state: State) -> u64 {
        result.states.get(&state).copied().unwrap_or(0)
    }

    /// The human table.
    pub(crate) fn table(&self, out: &mut impl Write) -> io::Result<()> {
        let results = self.results();
        for result in &results {
            let host = result.host;
            match &host.name {
                Some(name) => writeln!(out, "Scan of {name} ({})", host.address)?,
                None => writeln!(out, "Scan of {}", host.address)?,
            }
            if !host.other_addresses.is_empty() {
                let others: Vec<String> = host
                    .other_addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                writeln!(out, "Other addresses (not scanned): {}", others.join(" "))?;
            }
            let rtt = self.finding.rtts[result.index];
            if rtt.samples > 0 {
                writeln!(out, "Round trip {}", millis(rtt.srtt_us / 1000.0))?;
            }
            let hidden = self.hidden(result);
            if !hidden.is_empty() {
                writeln!(out, "Not shown: {hidden}")?;
            }
            if result.shown.is_empty() {
                writeln!(out, "No open ports.")?;
            } else {
                let service_width = result
                    .shown
                    .iter()
                    .filter_map(|line| line.service.map(str::len))
                    .max()
                    .unwrap_or(0)
                    .max("SERVICE".len());
                writeln!(
                    out,
                    "{:<10} {:<9} {:<service_width$} REASON",
                    "PORT", "STATE", "SERVICE"
                )?;
                for line in &result.shown {
                    writeln!(
                        out,
                        "{:<10} {:<9} {:<service_width$} {}",
                        format!("{}/tcp", line.port),
                        line.outcome.state().name(),
                        line.service.unwrap_or("unknown"),
                        line.outcome.reason()
                    )?;
                }
            }
            if result.not_scanned > 0 {
                writeln!(
                    out,
                    "Not scanned (interrupted): {} ports",
                    result.not_scanned
                )?;
            }
            writeln!(out)?;
        }
        let open: u64 = results.iter().map(|r| Self::count(r, State::Open)).sum();
        let closed: u64 = results.iter().map(|r| Self::count(r, State::Closed)).sum();
        let filtered: u64 = results
            .iter()
            .map(|r| Self::count(r, State::Filtered))
            .sum();
        writeln!(
            out,
            "Scanned {} host{} × {} ports in {:.2} s: {open} open, {closed} closed, {filtered} filtered.",
            self.hosts.len(),
            if self.hosts.len() == 1 { "" } else { "s" },
            self.plan.ports.len(),
            self.elapsed.as_secs_f64(),
        )
    }

    /// "65532 closed (conn-refused), 2 filtered (no-response)" for the states not listed.
    fn hidden(&self, result: &HostResult<'_>) -> String {
        if self.show_all {
            return String::new();
        }
        let mut parts = Vec::new();
        for state in [State::Closed, State::Filtered] {
            let count = Self::count(result, state);
            if count == 0 {
                continue;
            }
            let reasons: Vec<String> = result
                .reasons
                .iter()
                .filter(|((s, _), _)| *s == state)
                .map(|((_, reason), n)| {
                    if *n == count {
                        (*reason).to_string()
                    } else {
                        format!("{n} {reason}")
                    }
                })
                .collect();
            parts.push(format!("{count} {} ({})", state.name(), reasons.join(", ")));
        }
        parts.join(", ")
    }

    /// One line per host, in the layout of nmap's `-oG`.
    pub(crate) fn greppable(&self, out: &mut impl Write) -> io::Result<()> {
        for result in self.results() {
            let host = result.host;
            let ports: Vec<String> = result
                .shown
                .iter()
                .map(|line| {
                    format!(
                        "{}/{}/tcp//{}///",
                        line.port,
                        line.outcome.state().name(),
                        line.service.unwrap_or("")
                    )
                })
                .collect();
            let mut fields = vec![
                format!(
                    "Host: {} ({})",
                    host.address,
                    host.name.as_deref().unwrap_or("")
                ),
                format!("Ports: {}", ports.join(", ")),
            ];
            if !self.show_all {
                let ignored: Vec<String> = [State::Closed, State::Filtered]
                    .into_iter()
                    .filter_map(|state| {
                        let n = Self::count(&result, state);
                        (n > 0).then(|| format!("{} ({n})", state.name()))
                    })
                    .collect();
                if !ignored.is_empty() {
                    fields.push(format!("Ignored State: {}", ignored.join(", ")));
                }
            }
            writeln!(out, "{}", fields.join("\t"))?;
        }
        Ok(())
    }

    /// One JSON document.
    pub(crate) fn json(&self, out: &mut impl Write) -> io::Result<()> {
        let targets: Vec<Value> = self
            .results()
            .into_iter()
            .map(|result| {
                let rtt = self.finding.rtts[result.index];
                let reasons: BTreeMap<&str, u64> = result
                    .reasons
                    .iter()
                    .map(|((_, reason), n)| (*reason, *n))
                    .collect();
                json!({
                    "target": result.host.spec,
                    "address": result.host.address.to_string(),
                    "name": result.host.name,
                    "other_addresses": result.host.other_addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "counts": {
                        "open": Self::count(&result, State::Open),
                        "closed": Self::count(&result, State::Closed),
                        "filtered": Self::count(&result, State::Filtered),
                        "not_scanned": result.not_scanned,
                    },
                    "reasons": reasons,
                    "rtt_ms": (rtt.samples > 0).then(|| round3(rtt.srtt_us / 1000.0)),
                    "timeout_ms": round3(rtt.timeout(self.plan.min_timeout, self.plan.max_timeout).as_secs_f64() * 1000.0),
                    "ports": result.shown.iter().map(|line| json!({
                        "port": line.port,
                        "protocol": "tcp",
                        "state": line.outcome.state().name(),
                        "reason": line.outcome.reason(),
                        "service": line.service,
                        "rtt_ms": line.rtt.map(|rtt| round3(rtt.as_secs_f64() * 1000.0)),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let counters = self.counters;
        let started = self
            .started_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let document = json!({
            "scanner": "socketeer",
            "version": env!("CARGO_PKG_VERSION"),
            "scan": "tcp-connect",
            "ports": {
                "spec": self.ports_text,
                "count": self.plan.ports.len(),
                "shown": if self.show_all { "all" } else { "open" },
            },
            "targets": targets,
            "timing": {
                "started": started,
                "elapsed_s": round3(self.elapsed.as_secs_f64()),
                "probes": self.plan.hosts.len() as u64 * self.plan.ports.len() as u64,
                "connects": counters.connects.load(Ordering::Relaxed),
                "retries": counters.retried.load(Ordering::Relaxed),
                "concurrency": self.plan.concurrency,
                "lowest_concurrency": counters.min_concurrency.load(Ordering::Relaxed),
                "fd_pressure_events": counters.pressure.load(Ordering::Relaxed),
                "fd_limit": self.fd_limit,
                "threads": self.plan.threads,
                "rate_limit": self.plan.rate,
                "initial_timeout_ms": round3(self.plan.max_timeout.as_secs_f64() * 1000.0),
                "min_timeout_ms": round3(self.plan.min_timeout.as_secs_f64() * 1000.0),
                "max_retries": self.plan.retries,
            },
        });
        serde_json::to_writer_pretty(&mut *out, &document)?;
        writeln!(out)
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn millis(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.3} ms")
    } else {
        format!("{ms:.1} ms")
    }
}
