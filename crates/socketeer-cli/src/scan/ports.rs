//! Which ports to scan: `-p` lists and ranges, the top-N list, and service names.

use crate::failure::UsageError;

/// The 1000 TCP ports most often found open, most frequent first (scripts/gen-scan-data.sh).
const TOP_PORTS: &str = include_str!("../../data/top-tcp-ports.txt");
/// `PORT NAME` lines: IANA service names (scripts/gen-scan-data.sh).
const SERVICES: &str = include_str!("../../data/tcp-services.txt");

/// How many ports the embedded top list holds.
pub(crate) const TOP_COUNT: usize = 1000;

/// Parses a `-p` value: comma-separated ports and ranges (`22,80,8000-9000`), with open ends
/// (`-1024` from 1, `60000-` to 65535) and `-` alone for every port. Returns the ports in
/// ascending order without duplicates.
pub(crate) fn parse_ports(spec: &str) -> Result<Vec<u16>, UsageError> {
    let bad = |why: String| UsageError(format!("scan: bad port list {spec:?}: {why}"));
    if spec.trim().is_empty() {
        return Err(bad("it is empty".into()));
    }
    let mut wanted = vec![false; 65_536];
    for item in spec.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(bad("an empty item between commas".into()));
        }
        let (low, high) = match item.split_once('-') {
            None => {
                let port = parse_port(item).map_err(bad)?;
                (port, port)
            }
            Some((low, high)) => {
                let low = if low.is_empty() {
                    1
                } else {
                    parse_port(low).map_err(bad)?
                };
                let high = if high.is_empty() {
                    65_535
                } else {
                    parse_port(high).map_err(bad)?
                };
                if low > high {
                    return Err(bad(format!("range {item} runs backwards")));
                }
                (low, high)
            }
        };
        for port in low..=high {
            wanted[usize::from(port)] = true;
        }
    }
    Ok((1..=65_535u16)
        .filter(|&port| wanted[usize::from(port)])
        .collect())
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u32>() {
        Ok(0) => Err("port 0 cannot be scanned (ports are 1-65535)".into()),
        Ok(port) if port <= 65_535 => Ok(port as u16),
        Ok(port) => Err(format!("port {port} is above 65535")),
        Err(_) => Err(format!("{text:?} is not a port number")),
    }
}

/// The `count` most frequently open TCP ports (at most 1000), most frequent first.
pub(crate) fn top_ports(count: usize) -> Vec<u16> {
    TOP_PORTS
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.trim().parse().ok())
        .take(count)
        .collect()
}

/// Service names by port, for TCP.
pub(crate) struct Services {
    names: Vec<(u16, &'static str)>,
}

impl Services {
    /// The embedded IANA names.
    pub(crate) fn load() -> Services {
        let mut names: Vec<(u16, &'static str)> = SERVICES
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (port, name) = line.split_once(' ')?;
                Some((port.parse().ok()?, name.trim()))
            })
            .collect();
        names.sort_unstable();
        Services { names }
    }

    /// The service usually found on `port`, if it has a registered name.
    pub(crate) fn name(&self, port: u16) -> Option<&'static str> {
        self.names
            .binary_search_by_key(&port, |&(p, _)| p)
            .ok()
            .map(|i| self.names[i].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_ranges_and_open_ends() {
        assert_eq!(
            parse_ports("22,80,8000-8002").expect("valid"),
            [22, 80, 8000, 8001, 8002]
        );
        assert_eq!(
            parse_ports(" 80 , 22,22,21-23").expect("valid"),
            [21, 22, 23, 80]
        );
        assert_eq!(parse_ports("-3").expect("valid"), [1, 2, 3]);
        assert_eq!(parse_ports("65534-").expect("valid"), [65_534, 65_535]);
        assert_eq!(parse_ports("-").expect("valid").len(), 65_535);
        assert_eq!(parse_ports("1-65535").expect("valid").len(), 65_535);
        assert_eq!(parse_ports("7-7").expect("valid"), [7]);
        assert_eq!(parse_ports("-1").expect("valid"), [1]);
    }

    #[test]
    fn bad_lists_say_why() {
        for (spec, why) in [
            ("", "empty"),
            ("22,,80", "empty item"),
            ("0", "port 0"),
            ("65536", "above 65535"),
            ("99999999999", "not a port number"),
            ("http", "not a port number"),
            ("90-80", "backwards"),
            ("1-2-3", "not a port number"),
        ] {
            let err = parse_ports(spec).expect_err("invalid").0;
            assert!(err.contains(why), "{spec:?}: {err}");
            assert!(err.starts_with("scan: bad port list"), "{err}");
        }
    }

    #[test]
    fn top_list_is_nmaps_order() {
        let top = top_ports(TOP_COUNT);
        assert_eq!(top.len(), 1000);
        assert_eq!(&top[..5], [80, 23, 443, 21, 22]);
        let mut sorted = top.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 1000, "no duplicates");
        assert_eq!(top_ports(10).len(), 10);
    }

    #[test]
    fn service_names() {
        let services = Services::load();
        assert_eq!(services.name(22), Some("ssh"));
        assert_eq!(services.name(443), Some("https"));
        assert_eq!(services.name(1), Some("tcpmux"));
        assert_eq!(services.name(65_000), None);
    }
}
