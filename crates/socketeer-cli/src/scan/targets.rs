//! What to scan: addresses, networks and host names from the command line.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::failure::UsageError;

/// One target as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetSpec {
    /// An IPv4 or IPv6 address (`[::1]` also accepted).
    Address(IpAddr),
    /// A network in CIDR notation; its host addresses are scanned.
    Network(IpNet),
    /// A host name, resolved before the scan.
    Name(String),
}

/// A host to scan.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// The command-line text it came from.
    pub(crate) spec: String,
    /// The address scanned.
    pub(crate) address: IpAddr,
    /// The name it was resolved from, if any.
    pub(crate) name: Option<String>,
    /// Other addresses the name resolved to (not scanned, as nmap does).
    pub(crate) other_addresses: Vec<IpAddr>,
}

/// Parses one target argument.
pub(crate) fn parse_target(text: &str) -> Result<TargetSpec, UsageError> {
    let bad = |why: &str| UsageError(format!("scan: bad target {text:?}: {why}"));
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    let unbracketed = trimmed
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(trimmed);
    if let Ok(address) = unbracketed.parse::<IpAddr>() {
        return Ok(TargetSpec::Address(address));
    }
    if let Some((address, prefix)) = trimmed.split_once('/') {
        let address: IpAddr = address
            .parse()
            .map_err(|_| bad("the part before / is not an IP address"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|&p| p <= max)
            .ok_or_else(|| bad(&format!("the prefix length must be 0-{max}")))?;
        let network = IpNet::new(address, prefix).map_err(|e| bad(&e.to_string()))?;
        return Ok(TargetSpec::Network(network.trunc()));
    }
    if looks_like_ipv4(trimmed) {
        return Err(bad("not a valid IPv4 address"));
    }
    if trimmed.contains(':') {
        return Err(bad(
            "not a valid IPv6 address (zone ids such as %eth0 are not supported)",
        ));
    }
    if !is_host_name(trimmed) {
        return Err(bad(
            "not an IP address, CIDR network or host name (names use letters, digits, '-' and '.')",
        ));
    }
    Ok(TargetSpec::Name(trimmed.to_ascii_lowercase()))
}

fn looks_like_ipv4(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit() || b == b'.') && text.contains('.')
}

/// RFC 1123 host names (underscores allowed, as resolvers do).
fn is_host_name(text: &str) -> bool {
    let name = text.strip_suffix('.').unwrap_or(text);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// How many hosts a target stands for.
fn host_count(spec: &TargetSpec) -> u128 {
    match spec {
        TargetSpec::Address(_) | TargetSpec::Name(_) => 1,
        TargetSpec::Network(IpNet::V4(net)) => match net.prefix_len() {
            32 => 1,
            31 => 2,
            // Without the network and broadcast addresses, which no host answers on.
            len => (1u128 << (32 - len)) - 2,
        },
        TargetSpec::Network(IpNet::V6(net)) => 1u128
            .checked_shl(u32::from(128 - net.prefix_len()))
            .unwrap_or(u128::MAX),
    }
}

/// Turns the target arguments into hosts: networks expanded, names resolved (a name that does
/// not resolve is reported on stderr and skipped), duplicates dropped. More than `max_hosts`
/// hosts is a usage error that names the way out.
pub(crate) async fn resolve(texts: &[String], max_hosts: u64) -> Result<Vec<Host>, UsageError> {
    let specs = texts
        .iter()
        .map(|text| parse_target(text).map(|spec| (text.as_str(), spec)))
        .collect::<Result<Vec<_>, _>>()?;
    let total: u128 = specs.iter().map(|(_, spec)| host_count(spec)).sum();
    if total > u128::from(max_hosts) {
        return Err(UsageError(format!(
            "scan: the targets hold {total} hosts, more than --max-hosts {max_hosts}; \
             raise --max-hosts to scan them all"
        )));
    }
    let mut hosts = Vec::new();
    let mut seen = HashSet::new();
    let mut push = |host: Host, hosts: &mut Vec<Host>| {
        if seen.insert(host.address) {
            hosts.push(host);
        }
    };
    for (text, spec) in specs {
        match spec {
            TargetSpec::Address(address) => push(plain(text, address), &mut hosts),
            TargetSpec::Network(net) => {
                // ipnet leaves out IPv4 network and broadcast addresses, except in /31 and /32
                // where there are none (RFC 3021).
                for address in net.hosts() {
                    push(plain(text, address), &mut hosts);
                }
            }
            TargetSpec::Name(name) => match tokio::net::lookup_host((name.clone(), 0)).await {
                Ok(found) => {
                    let mut addresses: Vec<IpAddr> = Vec::new();
                    for addr in found {
                        if !addresses.contains(&addr.ip()) {
                            addresses.push(addr.ip());
                        }
                    }
                    // Like nmap: the first IPv4 address, else the first; the others are listed.
                    let chosen = addresses.iter().position(IpAddr::is_ipv4).unwrap_or(0);
                    if chosen < addresses.len() {
                        let address = addresses.remove(chosen);
                        push(
                            Host {
                                spec: text.to_owned(),
                                address,
                                name: Some(name),
                                other_addresses: addresses,
                            },
                            &mut hosts,
                        );
                    } else {
                        errln!("socketeer: scan: {text}: the name has no addresses; skipped");
                    }
                }
                Err(err) => errln!("socketeer: scan: cannot resolve {text}: {err}; skipped"),
            },
        }
    }
    Ok(hosts)
}

fn plain(text: &str, address: IpAddr) -> Host {
    Host {
        spec: text.to_owned(),
        address,
        name: None,
        other_addresses: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_networks_and_names() {
        assert_eq!(
            parse_target("127.0.0.1").expect("valid"),
            TargetSpec::Address("127.0.0.1".parse().expect("valid"))
        );
        assert_eq!(
            parse_target("::1").expect("valid"),
            TargetSpec::Address("::1".parse().expect("valid"))
        );
        assert_eq!(
            parse_target("[::1]").expect("valid"),
            TargetSpec::Address("::1".parse().expect("valid"))
        );
        assert_eq!(
            parse_target("10.1.2.3/24").expect("valid"),
            TargetSpec::Network("10.1.2.0/24".parse().expect("valid"))
        );
        assert_eq!(
            parse_target("fd00::1/120").expect("valid"),
            TargetSpec::Network("fd00::/120".parse().expect("valid"))
        );
        assert_eq!(
            parse_target("LocalHost").expect("valid"),
            TargetSpec::Name("localhost".into())
        );
        assert_eq!(
            parse_target("robot-7.lab.example.").expect("valid"),
            TargetSpec::Name("robot-7.lab.example.".into())
        );
    }

    #[test]
    fn bad_targets_say_why() {
        for (text, why) in [
            ("", "empty"),
            ("300.1.1.1", "not a valid IPv4"),
            ("10.0.0.0/33", "prefix length must be 0-32"),
            ("::/129", "prefix length must be 0-128"),
            ("10.0.0.0/x", "prefix length"),
            ("nothost/24", "not an IP address"),
            ("fe80::1%eth0", "zone ids"),
            ("bad_name!", "not an IP address, CIDR network or host name"),
            ("-lead.example", "host name"),
            ("a..b", "host name"),
            ("1.2.3", "not a valid IPv4"),
        ] {
            let err = parse_target(text).expect_err("invalid").0;
            assert!(err.contains(why), "{text:?}: {err}");
        }
        let long = format!("{}.example", "a".repeat(64));
        assert!(parse_target(&long).is_err());
    }

    #[test]
    fn counts_hosts_without_network_and_broadcast() {
        let count = |t: &str| host_count(&parse_target(t).expect("valid"));
        assert_eq!(count("10.0.0.0/24"), 254);
        assert_eq!(count("10.0.0.0/31"), 2);
        assert_eq!(count("10.0.0.7/32"), 1);
        assert_eq!(count("10.0.0.0/8"), 16_777_214);
        assert_eq!(count("fd00::/120"), 256);
        assert_eq!(count("::/0"), u128::MAX);
    }

    #[tokio::test]
    async fn expands_caps_and_dedups() {
        let targets = |list: &[&str]| list.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let hosts = resolve(&targets(&["192.0.2.0/30", "192.0.2.1", "192.0.2.9/32"]), 10)
            .await
            .expect("valid");
        let addresses: Vec<String> = hosts.iter().map(|h| h.address.to_string()).collect();
        assert_eq!(addresses, ["192.0.2.1", "192.0.2.2", "192.0.2.9"]);
        let hosts = resolve(&targets(&["192.0.2.0/31"]), 10)
            .await
            .expect("valid");
        assert_eq!(hosts.len(), 2);
        let err = resolve(&targets(&["10.0.0.0/16"]), 4096)
            .await
            .expect_err("invalid")
            .0;
        assert!(
            err.contains("65534 hosts, more than --max-hosts 4096"),
            "{err}"
        );
        assert_eq!(
            resolve(&targets(&["10.0.0.0/16"]), 65_534)
                .await
                .expect("valid")
                .len(),
            65_534
        );
        let hosts = resolve(&targets(&["localhost"]), 1).await.expect("valid");
        assert_eq!(hosts[0].name.as_deref(), Some("localhost"));
        assert!(hosts[0].address.is_loopback());
    }
}
