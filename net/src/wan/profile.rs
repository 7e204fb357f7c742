//! WAN profiles: the TOML format (deploy/wan/README.md), its strict validation, and writing a
//! profile back out with the hosts a harness assigned.
//!
//! ```toml
//! regions = ["us-east", "eu-west"]
//! max_udp_payload_bytes = 1472   # path MTU as UDP payload (optional)
//! queue_ms = 100                 # drop-tail bound of each link's backlog (optional)
//!
//! [defaults]                     # any link setting; a link's own value wins
//! jitter_ms = 1
//! loss = 0
//! bandwidth_mbps = 1000
//!
//! [[links]]
//! between = ["us-east", "eu-west"]   # both directions; `from` + `to` for one
//! delay_ms = 35                      # one way
//!
//! [hosts]                        # IP → region; a host not listed is not emulated
//! "198.18.0.1" = "us-east"
//! ```
//! Every ordered pair of regions, a region with itself included, must be covered by exactly one
//! link entry.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::WanError;
use super::link::LinkParams;

/// Most regions in a profile.
pub const MAX_REGIONS: usize = 64;
/// Most hosts in a profile's `[hosts]` table.
pub const MAX_HOSTS: usize = 4_096;
/// Path MTU (UDP payload bytes) when a profile gives none: a 1,500-byte IP MTU less the IPv4
/// and UDP headers.
pub const DEFAULT_MAX_UDP_PAYLOAD_BYTES: u16 = 1_472;
/// Drop-tail bound of a link's backlog (ms of serialization time) when a profile gives none.
pub const DEFAULT_QUEUE_MS: f64 = 100.0;

/// QUIC's smallest datagram to the largest UDP payload over IPv4.
const UDP_PAYLOAD_RANGE: (i64, i64) = (1_200, 65_527);
/// Ranges of the numeric settings: (key, min, max). Upper bounds keep durations representable
/// and flag unit mistakes (seconds written as ms, bit/s as Mbit/s).
const DELAY_MS: (&str, f64, f64) = ("delay_ms", 0.0, 10_000.0);
const JITTER_MS: (&str, f64, f64) = ("jitter_ms", 0.0, 10_000.0);
const LOSS: (&str, f64, f64) = ("loss", 0.0, 1.0);
const BANDWIDTH_MBPS: (&str, f64, f64) = ("bandwidth_mbps", 0.001, 1_000_000.0);
const QUEUE_MS: (&str, f64, f64) = ("queue_ms", 1.0, 10_000.0);

/// The file as written: kept so that [`WanProfile::to_toml`] writes back what was read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    regions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_udp_payload_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    queue_ms: Option<f64>,
    #[serde(default)]
    defaults: Settings,
    #[serde(default)]
    links: Vec<LinkEntry>,
    #[serde(default)]
    hosts: BTreeMap<String, String>,
}

/// Link settings, each optional (`[defaults]` fills what a link leaves out).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delay_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jitter_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bandwidth_mbps: Option<f64>,
}

/// One `[[links]]` entry. The settings are spelled out rather than a flattened [`Settings`]:
/// serde cannot deny unknown keys through `flatten`, and a misspelt key must not silently fall
/// back to the default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    between: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delay_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jitter_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bandwidth_mbps: Option<f64>,
}

impl LinkEntry {
    /// Its settings, each from the entry or else from `defaults`.
    fn settings(&self, defaults: &Settings) -> Settings {
        Settings {
            delay_ms: self.delay_ms.or(defaults.delay_ms),
            jitter_ms: self.jitter_ms.or(defaults.jitter_ms),
            loss: self.loss.or(defaults.loss),
            bandwidth_mbps: self.bandwidth_mbps.or(defaults.bandwidth_mbps),
        }
    }

    /// The (from, to) pairs of region names it covers.
    fn directions(&self, index: usize) -> Result<Vec<(&str, &str)>, WanError> {
        match (&self.between, &self.from, &self.to) {
            (Some(pair), None, None) if pair.len() == 2 => {
                let (a, b) = (pair[0].as_str(), pair[1].as_str());
                Ok(if a == b {
                    vec![(a, a)]
                } else {
                    vec![(a, b), (b, a)]
                })
            }
            (None, Some(from), Some(to)) => Ok(vec![(from.as_str(), to.as_str())]),
            _ => Err(WanError::LinkEnds { index }),
        }
    }
}

/// A parsed and validated WAN profile: regions, the link settings of every ordered pair of
/// regions, the path MTU, the queue bound, and the hosts (IP → region).
#[derive(Clone, Debug, PartialEq)]
pub struct WanProfile {
    /// As read (plus hosts added since), for [`WanProfile::to_toml`].
    file: ProfileFile,
    regions: Vec<String>,
    /// `links[from * regions.len() + to]`.
    links: Vec<LinkParams>,
    max_udp_payload_bytes: u16,
    queue: Duration,
    /// Host → index into `regions`.
    hosts: BTreeMap<IpAddr, usize>,
}

impl WanProfile {
    /// Reads and validates the profile at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<WanProfile, WanError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| WanError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        WanProfile::from_toml_str(&text)
    }

    /// Parses and validates a profile.
    pub fn from_toml_str(text: &str) -> Result<WanProfile, WanError> {
        let file: ProfileFile = toml::from_str(text).map_err(|e| WanError::Toml(e.to_string()))?;
        WanProfile::validate(file)
    }

    /// The profile as TOML, hosts included; [`WanProfile::from_toml_str`] reads it back to an
    /// equal profile. Comments of the file it was read from are not kept.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(&self.file).expect("a validated profile is plain TOML data");
        format!("# WAN profile (format: deploy/wan/README.md)\n{body}")
    }

    /// This profile with `hosts` (IP → region) added to its own. A host it already places in
    /// another region is an error; so is an unknown region.
    pub fn with_hosts(&self, hosts: BTreeMap<IpAddr, String>) -> Result<WanProfile, WanError> {
        let mut file = self.file.clone();
        for (ip, region) in hosts {
            if let Some(&existing) = self.hosts.get(&ip) {
                if self.regions[existing] != region {
                    return Err(WanError::HostConflict {
                        ip,
                        existing: self.regions[existing].clone(),
                        added: region,
                    });
                }
            }
            file.hosts.insert(ip.to_string(), region);
        }
        WanProfile::validate(file)
    }

    /// The regions, in the order the profile lists them.
    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    /// The settings of the link from region `from` to region `to` (both directions of a pair
    /// may differ), or `None` if either is not a region of this profile.
    pub fn link(&self, from: &str, to: &str) -> Option<&LinkParams> {
        Some(self.link_at(self.region_index(from)?, self.region_index(to)?))
    }

    /// The region of host `ip`, if the profile places it.
    pub fn region_of(&self, ip: IpAddr) -> Option<&str> {
        self.hosts.get(&ip).map(|&r| self.regions[r].as_str())
    }

    /// Every host and its region, in address order.
    pub fn hosts(&self) -> impl Iterator<Item = (IpAddr, &str)> {
        self.hosts
            .iter()
            .map(|(ip, &r)| (*ip, self.regions[r].as_str()))
    }

    /// The path MTU: the largest UDP payload (bytes) the emulated paths carry.
    pub fn max_udp_payload_bytes(&self) -> u16 {
        self.max_udp_payload_bytes
    }

    /// Most serialization time that may wait ahead of a datagram on a link before the link
    /// drops at the tail.
    pub fn queue(&self) -> Duration {
        self.queue
    }

    /// The index of region `name`.
    pub(super) fn region_index(&self, name: &str) -> Option<usize> {
        self.regions.iter().position(|r| r == name)
    }

    /// The link between two region indices.
    pub(super) fn link_at(&self, from: usize, to: usize) -> &LinkParams {
        &self.links[from * self.regions.len() + to]
    }

    /// Hosts as (IP, region index).
    pub(super) fn host_regions(&self) -> impl Iterator<Item = (IpAddr, usize)> + '_ {
        self.hosts.iter().map(|(ip, &r)| (*ip, r))
    }

    fn validate(mut file: ProfileFile) -> Result<WanProfile, WanError> {
        let regions = validate_regions(&file.regions)?;
        let links = validate_links(&file, &regions)?;
        let max_udp_payload_bytes = match file.max_udp_payload_bytes {
            None => DEFAULT_MAX_UDP_PAYLOAD_BYTES,
            Some(value) => validate_udp_payload(value)?,
        };
        let queue_ms = file.queue_ms.unwrap_or(DEFAULT_QUEUE_MS);
        let queue_ms = number("top level", QUEUE_MS, queue_ms)?;
        let hosts = validate_hosts(&file.hosts, &regions)?;
        // Written back in canonical form, one key per host.
        file.hosts = hosts
            .iter()
            .map(|(ip, &r)| (ip.to_string(), regions[r].clone()))
            .collect();
        Ok(WanProfile {
            regions,
            links,
            max_udp_payload_bytes,
            queue: Duration::from_secs_f64(queue_ms / 1_000.0),
            hosts,
            file,
        })
    }
}

/// Host → region index. Two spellings of one address must agree on its region.
fn validate_hosts(
    written: &BTreeMap<String, String>,
    regions: &[String],
) -> Result<BTreeMap<IpAddr, usize>, WanError> {
    if written.len() > MAX_HOSTS {
        return Err(WanError::TooManyHosts {
            count: written.len(),
            max: MAX_HOSTS,
        });
    }
    let mut hosts = BTreeMap::new();
    for (address, region) in written {
        let ip: IpAddr = address
            .parse()
            .map_err(|_| WanError::BadHostAddress(address.clone()))?;
        let index = find_region(regions, region, "hosts")?;
        if let Some(existing) = hosts.insert(ip, index) {
            if existing != index {
                return Err(WanError::HostConflict {
                    ip,
                    existing: regions[existing].clone(),
                    added: region.clone(),
                });
            }
        }
    }
    Ok(hosts)
}

fn validate_regions(names: &[String]) -> Result<Vec<String>, WanError> {
    if names.is_empty() {
        return Err(WanError::NoRegions);
    }
    if names.len() > MAX_REGIONS {
        return Err(WanError::TooManyRegions {
            count: names.len(),
            max: MAX_REGIONS,
        });
    }
    for (i, name) in names.iter().enumerate() {
        let valid = (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(WanError::BadRegionName(name.clone()));
        }
        if names[..i].contains(name) {
            return Err(WanError::DuplicateRegion(name.clone()));
        }
    }
    Ok(names.to_vec())
}

/// The link table (`from * n + to`): every ordered pair covered exactly once.
fn validate_links(file: &ProfileFile, regions: &[String]) -> Result<Vec<LinkParams>, WanError> {
    let n = regions.len();
    let mut table: Vec<Option<LinkParams>> = vec![None; n * n];
    for (i, entry) in file.links.iter().enumerate() {
        let at = format!("links[{i}]");
        let directions = entry.directions(i)?;
        let params = link_params(&at, &entry.settings(&file.defaults))?;
        for (from, to) in directions {
            let (from, to) = (
                find_region(regions, from, &at)?,
                find_region(regions, to, &at)?,
            );
            let slot = &mut table[from * n + to];
            if slot.is_some() {
                return Err(WanError::DuplicateLink {
                    from: regions[from].clone(),
                    to: regions[to].clone(),
                });
            }
            *slot = Some(params.clone());
        }
    }
    table
        .into_iter()
        .enumerate()
        .map(|(k, params)| {
            params.ok_or_else(|| WanError::MissingLink {
                from: regions[k / n].clone(),
                to: regions[k % n].clone(),
            })
        })
        .collect()
}

/// The index of region `name`, named at `at`.
fn find_region(regions: &[String], name: &str, at: &str) -> Result<usize, WanError> {
    regions
        .iter()
        .position(|r| r == name)
        .ok_or_else(|| WanError::UnknownRegion {
            region: name.to_string(),
            at: at.to_string(),
        })
}

/// One link's settings, each present and within its range.
fn link_params(at: &str, settings: &Settings) -> Result<LinkParams, WanError> {
    let required = |(setting, min, max): (&'static str, f64, f64), value: Option<f64>| {
        let value = value.ok_or_else(|| WanError::MissingSetting {
            at: at.to_string(),
            setting,
        })?;
        number(at, (setting, min, max), value)
    };
    let delay_ms = required(DELAY_MS, settings.delay_ms)?;
    let jitter_ms = required(JITTER_MS, settings.jitter_ms)?;
    let loss = required(LOSS, settings.loss)?;
    let bandwidth_mbps = required(BANDWIDTH_MBPS, settings.bandwidth_mbps)?;
    Ok(LinkParams {
        delay: Duration::from_secs_f64(delay_ms / 1_000.0),
        jitter: Duration::from_secs_f64(jitter_ms / 1_000.0),
        loss,
        bandwidth_bit_s: bandwidth_mbps * 1e6,
    })
}

/// `value` if finite and within `min..=max`.
fn number(
    at: &str,
    (setting, min, max): (&'static str, f64, f64),
    value: f64,
) -> Result<f64, WanError> {
    if !value.is_finite() {
        return Err(WanError::NotFinite {
            at: at.to_string(),
            setting,
            value,
        });
    }
    if !(min..=max).contains(&value) {
        return Err(WanError::OutOfRange {
            at: at.to_string(),
            setting,
            value,
            min,
            max,
        });
    }
    Ok(value)
}

fn validate_udp_payload(value: i64) -> Result<u16, WanError> {
    let (min, max) = UDP_PAYLOAD_RANGE;
    if !(min..=max).contains(&value) {
        return Err(WanError::OutOfRange {
            at: "top level".into(),
            setting: "max_udp_payload_bytes",
            value: value as f64,
            min: min as f64,
            max: max as f64,
        });
    }
    Ok(u16::try_from(value).expect("within 1,200..=65,527"))
}
