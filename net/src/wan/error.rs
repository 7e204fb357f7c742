//! Why a WAN profile or emulator could not be built.

use std::net::IpAddr;
use std::path::PathBuf;

/// A WAN profile that cannot be read or is not valid, or a region that is not in it.
#[derive(Debug, thiserror::Error)]
pub enum WanError {
    /// The profile file could not be read.
    #[error("read WAN profile {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not TOML, or not the shape of a profile (unknown key, wrong type); the message names the
    /// line.
    #[error("WAN profile: {0}")]
    Toml(String),
    /// `regions` is empty.
    #[error("WAN profile: no regions")]
    NoRegions,
    /// More regions than [`MAX_REGIONS`](super::MAX_REGIONS).
    #[error("WAN profile: {count} regions, at most {max}")]
    TooManyRegions {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A region name that is empty, too long, or has characters other than letters, digits,
    /// `-`, `_` and `.`.
    #[error("WAN profile: bad region name {0:?} (1 to 64 of A-Z a-z 0-9 - _ .)")]
    BadRegionName(String),
    /// A region listed twice.
    #[error("WAN profile: region {0:?} listed twice")]
    DuplicateRegion(String),
    /// A region named somewhere (`at`) that is not in `regions`.
    #[error("WAN profile: {at}: unknown region {region:?}")]
    UnknownRegion {
        /// The unknown name.
        region: String,
        /// Where it was named (`links[2]`, `hosts`, `own region`).
        at: String,
    },
    /// A link entry that does not name its ends as exactly one of `between = [a, b]` or
    /// `from = a, to = b`.
    #[error("WAN profile: links[{index}]: give either `between = [A, B]` or `from` and `to`")]
    LinkEnds {
        /// Its position in `links`.
        index: usize,
    },
    /// Two link entries cover the same direction.
    #[error("WAN profile: link {from} → {to} given twice")]
    DuplicateLink {
        /// Sending region.
        from: String,
        /// Receiving region.
        to: String,
    },
    /// A direction between two regions (or within one) that no link entry covers.
    #[error("WAN profile: no link {from} → {to}")]
    MissingLink {
        /// Sending region.
        from: String,
        /// Receiving region.
        to: String,
    },
    /// A link setting given neither by the link nor by `[defaults]`.
    #[error("WAN profile: {at}: no {setting} (give it there or in [defaults])")]
    MissingSetting {
        /// Which link.
        at: String,
        /// The setting's key.
        setting: &'static str,
    },
    /// A number that is NaN or infinite.
    #[error("WAN profile: {at}: {setting} = {value} is not a finite number")]
    NotFinite {
        /// Where (`defaults`, `links[2]`, top level).
        at: String,
        /// The key.
        setting: &'static str,
        /// The value given.
        value: f64,
    },
    /// A number outside its range.
    #[error("WAN profile: {at}: {setting} = {value} is outside {min}..={max}")]
    OutOfRange {
        /// Where (`defaults`, `links[2]`, top level).
        at: String,
        /// The key.
        setting: &'static str,
        /// The value given.
        value: f64,
        /// Smallest allowed.
        min: f64,
        /// Largest allowed.
        max: f64,
    },
    /// A `[hosts]` key that is not an IP address.
    #[error("WAN profile: hosts: {0:?} is not an IP address")]
    BadHostAddress(String),
    /// More hosts than [`MAX_HOSTS`](super::MAX_HOSTS).
    #[error("WAN profile: {count} hosts, at most {max}")]
    TooManyHosts {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A host added to a profile that already places it in another region.
    #[error("WAN profile: host {ip} is in region {existing:?}, cannot also be in {added:?}")]
    HostConflict {
        /// The host.
        ip: IpAddr,
        /// Its region in the profile.
        existing: String,
        /// The region it was given.
        added: String,
    },
}
