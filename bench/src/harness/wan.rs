//! `--wan PROFILE` for `local` and `cluster`: finds the profile (a path, or the name of one
//! shipped in `deploy/wan/`), places every host in a region (its own `region` if it names one,
//! else round robin over the profile's regions), and writes the profile with that hosts table for
//! the processes (`--wan wan.toml --region R`). The emulation itself is
//! [`sleepyseal_net::wan`]: each process delays, jitters, drops and rate-limits its outgoing
//! datagrams by the destination's region.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sleepyseal_net::wan::WanProfile;

/// Where shipped profiles are, from the working directory.
pub const PROFILES_DIR: &str = "deploy/wan";

/// The directories searched for a shipped profile: `deploy/wan` under the working directory,
/// then in the checkout this binary was built from (so a run started elsewhere finds them too).
fn profile_dirs() -> Vec<PathBuf> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(PROFILES_DIR);
    vec![PathBuf::from(PROFILES_DIR), built_from]
}

/// The profile file `--wan` names: a path, or the name of a profile in `deploy/wan/`.
pub fn find_profile(arg: &Path) -> anyhow::Result<PathBuf> {
    if arg.is_file() {
        return Ok(arg.to_path_buf());
    }
    let dirs = profile_dirs();
    if let Some(shipped) = dirs
        .iter()
        .map(|d| d.join(arg).with_extension("toml"))
        .find(|p| p.is_file())
    {
        return Ok(shipped);
    }
    let mut names: Vec<String> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|d| {
            d.flatten().filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".toml").map(str::to_string)
            })
        })
        .collect();
    names.sort();
    names.dedup();
    bail!(
        "--wan {}: no such file, and no profile of that name in {PROFILES_DIR}/ (shipped: {})",
        arg.display(),
        names.join(", ")
    )
}

/// A profile with every host placed.
pub struct Assigned {
    /// The profile as named on the command line.
    pub name: String,
    /// Its regions.
    pub regions: Vec<String>,
    /// The region of each host, in the order given.
    pub host_regions: Vec<String>,
    /// The profile with its hosts table, as TOML.
    pub toml: String,
}

/// Places `hosts` (address, region it names if any) in the regions of the profile `--wan` names.
pub fn assign(profile_arg: &Path, hosts: &[(IpAddr, Option<String>)]) -> anyhow::Result<Assigned> {
    let (path, profile) = load(profile_arg)?;
    place(profile_arg, &path, &profile, hosts)
}

/// The profile `--wan` names, and where it was found.
fn load(profile_arg: &Path) -> anyhow::Result<(PathBuf, WanProfile)> {
    let path = find_profile(profile_arg)?;
    let profile =
        WanProfile::load(&path).with_context(|| format!("WAN profile {}", path.display()))?;
    Ok((path, profile))
}

/// Places `hosts` in `profile`'s regions: a host's own region if it names one, else round robin.
fn place(
    profile_arg: &Path,
    path: &Path,
    profile: &WanProfile,
    hosts: &[(IpAddr, Option<String>)],
) -> anyhow::Result<Assigned> {
    let regions = profile.regions().to_vec();
    let mut next = 0;
    let mut table = BTreeMap::new();
    let mut host_regions = Vec::new();
    for (ip, named) in hosts {
        let region = match named {
            Some(r) if regions.contains(r) => r.clone(),
            Some(r) => bail!(
                "host {ip} names region {r:?}, which profile {} does not have ({})",
                path.display(),
                regions.join(", ")
            ),
            None => {
                next += 1;
                regions[(next - 1) % regions.len()].clone()
            }
        };
        if let Some(other) = table.insert(*ip, region.clone()) {
            if other != region {
                bail!("address {ip} is placed in both {other} and {region}");
            }
        }
        host_regions.push(region);
    }
    let placed = profile
        .with_hosts(table)
        .with_context(|| format!("WAN profile {}", path.display()))?;
    Ok(Assigned {
        name: profile_arg.display().to_string(),
        regions,
        host_regions,
        toml: placed.to_toml(),
    })
}

/// Where the processes of a `local` run sit when a WAN is emulated: each its own loopback
/// address (core i at 127.0.1.(i+1), driver j at 127.0.2.(j+1), load client c at 127.0.3.(c+1),
/// the harness at 127.0.0.1), cores round robin over the regions, every other process in the
/// region of a core (driver j beside core j, load client c beside core c, the harness beside
/// core 0).
pub struct LocalPlacement {
    /// The profile with its hosts table, as TOML.
    pub toml: String,
    /// Region of each core.
    pub cores: Vec<String>,
    /// Region of each driver.
    pub drivers: Vec<String>,
    /// Region of each load client.
    pub loads: Vec<String>,
}

/// Address of core `i` in a local run with a WAN.
pub fn local_core_ip(i: usize) -> IpAddr {
    IpAddr::from([127, 0, 1, 1 + i as u8])
}

/// Address of driver `j` in a local run with a WAN.
pub fn local_driver_ip(j: usize) -> IpAddr {
    IpAddr::from([127, 0, 2, 1 + j as u8])
}

/// Address of load client `c` in a local run with a WAN.
pub fn local_load_ip(c: usize) -> IpAddr {
    IpAddr::from([127, 0, 3, 1 + c as u8])
}

/// Places the processes of a local run (at most 250 of each kind).
pub fn place_local(
    profile_arg: &Path,
    cores: usize,
    drivers: usize,
    loads: usize,
) -> anyhow::Result<LocalPlacement> {
    if cores.max(drivers).max(loads) > 250 {
        bail!("--wan in `local` gives each process a 127.0.x.y address: at most 250 of a kind");
    }
    let (path, profile) = load(profile_arg)?;
    let regions = profile.regions();
    let region = |i: usize| regions[i % cores % regions.len()].clone();
    let mut hosts: Vec<(IpAddr, Option<String>)> = (0..cores)
        .map(|i| (local_core_ip(i), Some(region(i))))
        .collect();
    hosts.extend((0..drivers).map(|j| (local_driver_ip(j), Some(region(j)))));
    hosts.extend((0..loads).map(|c| (local_load_ip(c), Some(region(c)))));
    hosts.push((IpAddr::from([127, 0, 0, 1]), Some(region(0))));
    let placed = place(profile_arg, &path, &profile, &hosts)?;
    Ok(LocalPlacement {
        toml: placed.toml,
        cores: (0..cores).map(region).collect(),
        drivers: (0..drivers).map(region).collect(),
        loads: (0..loads).map(region).collect(),
    })
}
