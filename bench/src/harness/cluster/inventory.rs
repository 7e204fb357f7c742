//! The hosts of a cluster run, from a plain Ansible inventory as `ansible-inventory --list`
//! prints it (so every inventory format Ansible reads works, and nothing here parses YAML).
//!
//! Groups: `cores` (one core each, in inventory order: the first is core 0; each core runs its
//! home driver in its own process), `drivers` (hosts that run a standalone driver as well, with
//! the home core of the core on the same host if there is one; default: none) and `loads` (a
//! load client and an observer each). A host may be in several.
//! Host variables read: `ansible_host` (the address others reach it at, else its name),
//! `advertise` (overrides that address in the committee: `ADDR` or `ADDR:PORT`), `listen` (what
//! its core binds, for a host behind NAT: `IP` or `IP:PORT`) and `region` (its WAN region).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

/// One host of the inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// Its inventory name.
    pub name: String,
    /// The address other hosts reach it at (`advertise`, else `ansible_host`, else the name).
    pub address: String,
    /// The IP its core listens on, if not `address`.
    pub listen: Option<String>,
    /// Its WAN region, if the inventory names one.
    pub region: Option<String>,
}

/// The hosts of each role.
#[derive(Clone, Debug)]
pub struct Inventory {
    /// Every host named in a role group, in first-mention order.
    pub hosts: Vec<Host>,
    /// Indices into `hosts`: core i runs on `hosts[cores[i]]`.
    pub cores: Vec<usize>,
    /// Hosts that run standalone drivers (group `drivers`; may be empty).
    pub drivers: Vec<usize>,
    /// Hosts that run a load client and an observer.
    pub loads: Vec<usize>,
}

impl Host {
    /// `host:port` others reach its core at: `advertise` or `ansible_host`, with `port` unless the
    /// variable names one.
    pub fn advertised(&self, port: u16) -> String {
        with_port(&self.address, port)
    }

    /// The port its core is reached at.
    pub fn core_port(&self, port: u16) -> u16 {
        self.advertised(port)
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(port)
    }

    /// What its core binds, if not the advertised address: `listen`, with the core's port unless
    /// it names one.
    pub fn listen_on(&self, port: u16) -> Option<String> {
        self.listen
            .as_deref()
            .map(|l| with_port(l, self.core_port(port)))
    }
}

/// `address` if it names a port (`1.2.3.4:5`, `[::1]:5`, `name:5`), else `address:port`
/// (bracketing a bare IPv6 address).
pub fn with_port(address: &str, port: u16) -> String {
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return address.to_string();
    }
    if address.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("[{address}]:{port}");
    }
    match address.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => address.to_string(),
        _ => format!("{address}:{port}"),
    }
}

impl Inventory {
    /// Reads the output of `ansible-inventory --list`.
    pub fn from_list_json(text: &str) -> anyhow::Result<Inventory> {
        let root: Value = serde_json::from_str(text).context("ansible-inventory output")?;
        let hostvars = root
            .pointer("/_meta/hostvars")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut hosts: Vec<Host> = Vec::new();
        let index_of = |name: &str, hosts: &mut Vec<Host>| -> anyhow::Result<usize> {
            if let Some(i) = hosts.iter().position(|h| h.name == name) {
                return Ok(i);
            }
            hosts.push(host(name, hostvars.get(name))?);
            Ok(hosts.len() - 1)
        };
        let role = |group: &str, hosts: &mut Vec<Host>| -> anyhow::Result<Vec<usize>> {
            members(&root, group, 0)?
                .iter()
                .map(|name| index_of(name, hosts))
                .collect()
        };
        let cores = role("cores", &mut hosts)?;
        let drivers = role("drivers", &mut hosts)?;
        let loads = role("loads", &mut hosts)?;
        if cores.is_empty() {
            bail!("the inventory has no host in group `cores`");
        }
        if loads.is_empty() {
            bail!("the inventory has no host in group `loads`");
        }
        let addresses: BTreeMap<&str, &str> = cores
            .iter()
            .map(|i| (hosts[*i].address.as_str(), hosts[*i].name.as_str()))
            .collect();
        if addresses.len() != cores.len() {
            bail!("two hosts of group `cores` have the same address");
        }
        Ok(Inventory {
            drivers,
            hosts,
            cores,
            loads,
        })
    }

    /// The index of the core on host `h`, if it runs one.
    pub fn core_on(&self, h: usize) -> Option<usize> {
        self.cores.iter().position(|c| *c == h)
    }
}

/// The host names of `group` and of its child groups, in order, without repeats.
fn members(root: &Value, group: &str, depth: usize) -> anyhow::Result<Vec<String>> {
    if depth > 16 {
        bail!("inventory groups nest more than 16 deep (a cycle?) at `{group}`");
    }
    let Some(entry) = root.get(group) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = Vec::new();
    for name in strings(entry.get("hosts")) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    for child in strings(entry.get("children")) {
        for name in members(root, &child, depth + 1)? {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn host(name: &str, vars: Option<&Value>) -> anyhow::Result<Host> {
    let var = |key: &str| -> anyhow::Result<Option<String>> {
        match vars.and_then(|v| v.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
            Some(other) => Err(anyhow!("host {name}: `{key}` must be a text, not {other}")),
        }
    };
    let address = var("advertise")?
        .or(var("ansible_host")?)
        .unwrap_or_else(|| name.to_string());
    Ok(Host {
        name: name.to_string(),
        address,
        listen: var("listen")?,
        region: var("region")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTED: &str = r#"{
        "_meta": {"hostvars": {
            "a": {"ansible_host": "198.18.0.11", "region": "us-east"},
            "b": {"ansible_host": "198.18.0.12", "listen": "0.0.0.0"},
            "c": {"ansible_host": "198.18.0.13", "advertise": "203.0.113.9"},
            "l": {}
        }},
        "all": {"children": ["ungrouped", "cores", "loads", "validators"]},
        "validators": {"children": ["cores"]},
        "cores": {"hosts": ["a", "b"], "children": ["extra"]},
        "extra": {"hosts": ["c", "a"]},
        "loads": {"hosts": ["c", "l"]}
    }"#;

    #[test]
    fn roles_come_from_groups_and_their_children() {
        let inv = Inventory::from_list_json(LISTED).unwrap();
        let names = |ix: &[usize]| -> Vec<&str> {
            ix.iter().map(|i| inv.hosts[*i].name.as_str()).collect()
        };
        assert_eq!(names(&inv.cores), ["a", "b", "c"]);
        assert!(inv.drivers.is_empty(), "no standalone drivers by default");
        assert_eq!(names(&inv.loads), ["c", "l"]);
        let c = &inv.hosts[inv.cores[2]];
        assert_eq!(c.address, "203.0.113.9", "advertise wins over ansible_host");
        assert_eq!(inv.hosts[inv.cores[1]].listen.as_deref(), Some("0.0.0.0"));
        assert_eq!(inv.hosts[inv.cores[0]].region.as_deref(), Some("us-east"));
        assert_eq!(
            inv.hosts[inv.loads[1]].address, "l",
            "no ansible_host: the name"
        );
        assert_eq!(inv.core_on(inv.loads[0]), Some(2));
        assert_eq!(inv.core_on(inv.loads[1]), None);
    }

    #[test]
    fn addresses_take_the_base_port_unless_they_name_one() {
        let host = |address: &str, listen: Option<&str>| Host {
            name: "h".into(),
            address: address.into(),
            listen: listen.map(str::to_string),
            region: None,
        };
        assert_eq!(host("198.18.0.1", None).advertised(7300), "198.18.0.1:7300");
        assert_eq!(
            host("192.0.2.30:7100", None).advertised(7300),
            "192.0.2.30:7100"
        );
        assert_eq!(
            host("2001:db8::1", None).advertised(7300),
            "[2001:db8::1]:7300"
        );
        assert_eq!(
            host("node.example", None).advertised(7300),
            "node.example:7300"
        );
        let nat = host("192.0.2.30:7100", Some("0.0.0.0"));
        assert_eq!(
            nat.listen_on(7300).as_deref(),
            Some("0.0.0.0:7100"),
            "the advertised port"
        );
        let nat = host("192.0.2.30:7100", Some("0.0.0.0:7200"));
        assert_eq!(nat.listen_on(7300).as_deref(), Some("0.0.0.0:7200"));
        assert_eq!(host("198.18.0.1", None).listen_on(7300), None);
    }

    #[test]
    fn an_inventory_without_cores_or_loads_is_refused() {
        let err = Inventory::from_list_json(r#"{"loads": {"hosts": ["x"]}}"#).unwrap_err();
        assert!(err.to_string().contains("cores"), "{err}");
        let err = Inventory::from_list_json(r#"{"cores": {"hosts": ["x"]}}"#).unwrap_err();
        assert!(err.to_string().contains("loads"), "{err}");
        let bad = r#"{"_meta": {"hostvars": {"x": {"region": 5}}}, "cores": {"hosts": ["x"]},
                      "loads": {"hosts": ["x"]}}"#;
        assert!(Inventory::from_list_json(bad).is_err());
    }
}
