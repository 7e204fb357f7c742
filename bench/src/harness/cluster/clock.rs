//! How far apart the hosts' clocks may be, from what the `preflight` role recorded on each host
//! (`preflight.json`). End-to-end latency needs no bound (an observer compares its own clients'
//! send times with its own commit times); consensus latency compares the author's header time
//! with the observer's commit time, so it is reported with the sum of the two hosts' bounds.
//!
//! Per host, the tightest method that applies:
//! - **same kernel clock**: the host's boot id is the controller's (namespace test hosts): 0;
//! - **chrony**: |system time offset| + root dispersion + root delay / 2, as chrony reports them
//!   (the standard bound on the distance to true time);
//! - **bracket**: the host's clock read between two controller readings; its offset from the
//!   controller is at most the larger distance to either (coarse: an SSH round trip).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The bound of one host.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostClock {
    /// How it was found: `same-kernel`, `chrony` or `bracket`.
    pub method: String,
    /// Most milliseconds its clock may be off (from the controller's, or from true time with
    /// chrony).
    pub bound_ms: f64,
}

/// Reads the bound of the host whose preflight record is `host_file`, given the controller's
/// boot id.
pub fn host_clock(host_file: &Path, controller_boot_id: Option<&str>) -> Option<HostClock> {
    let text = std::fs::read_to_string(host_file).ok()?;
    from_preflight(&serde_json::from_str(&text).ok()?, controller_boot_id)
}

/// The bound from one preflight record.
pub fn from_preflight(record: &Value, controller_boot_id: Option<&str>) -> Option<HostClock> {
    let text = |k: &str| record.get(k).and_then(Value::as_str).map(str::trim);
    let number = |k: &str| -> Option<i128> {
        match record.get(k)? {
            Value::Number(n) => n.as_i64().map(i128::from),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    };
    if let (Some(mine), Some(theirs)) = (text("boot_id"), controller_boot_id) {
        if !mine.is_empty() && mine == theirs.trim() {
            return Some(HostClock {
                method: "same-kernel".into(),
                bound_ms: 0.0,
            });
        }
    }
    if let Some(bound_ms) = text("chrony").and_then(chrony_bound_ms) {
        return Some(HostClock {
            method: "chrony".into(),
            bound_ms,
        });
    }
    let (host, before, after) = (
        number("time_ns")?,
        number("controller_before_ns")?,
        number("controller_after_ns")?,
    );
    if after < before {
        return None;
    }
    let bound_ns = (host - before).abs().max((host - after).abs());
    Some(HostClock {
        method: "bracket".into(),
        bound_ms: bound_ns as f64 / 1e6,
    })
}

/// The bound from `chronyc -c tracking` (CSV): |system time| + root dispersion + root delay / 2,
/// in ms; `None` if chrony is not synchronised or the line does not parse.
fn chrony_bound_ms(csv: &str) -> Option<f64> {
    let fields: Vec<&str> = csv.lines().next()?.split(',').collect();
    let f = |i: usize| -> Option<f64> { fields.get(i)?.trim().parse().ok() };
    // 4: system time offset (s), 10: root delay (s), 11: root dispersion (s), 13: leap status.
    let leap = fields.get(13)?.trim();
    if leap.eq_ignore_ascii_case("not synchronised") {
        return None;
    }
    let bound_s = f(4)?.abs() + f(11)? + f(10)? / 2.0;
    bound_s.is_finite().then_some(bound_s * 1e3)
}

/// The most two hosts' clocks may differ: the sum of the two largest host bounds (one host: its
/// own bound twice would overstate it, so just its bound); `None` if a host has no bound.
pub fn pairwise_bound_ms(hosts: &[Option<HostClock>]) -> Option<f64> {
    let mut bounds: Vec<f64> = hosts
        .iter()
        .map(|h| h.as_ref().map(|c| c.bound_ms))
        .collect::<Option<_>>()?;
    bounds.sort_by(|a, b| b.total_cmp(a));
    Some(bounds.iter().take(2).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_same_boot_id_means_the_same_clock() {
        let r = json!({"boot_id": "abc\n", "time_ns": 5, "controller_before_ns": 0,
                       "controller_after_ns": 1_000_000_000});
        assert_eq!(from_preflight(&r, Some("abc")).unwrap().bound_ms, 0.0);
        let other = from_preflight(&r, Some("xyz")).unwrap();
        assert_eq!(other.method, "bracket");
        assert!((other.bound_ms - 1_000.0).abs() < 1e-3, "{other:?}");
    }

    #[test]
    fn chrony_tracking_gives_offset_plus_dispersion_plus_half_delay() {
        let line = "C0A80001,192.168.0.1,3,1700000000.0,-0.000200,0.0,0.0,1.0,0.0,0.1,0.004000,0.001000,64.0,Normal";
        let r = json!({"boot_id": "a", "chrony": line, "time_ns": "1",
                       "controller_before_ns": "0", "controller_after_ns": "2"});
        let c = from_preflight(&r, Some("b")).unwrap();
        assert_eq!(c.method, "chrony");
        assert!((c.bound_ms - 3.2).abs() < 1e-9, "{c:?}");
        let unsynced = line.replace("Normal", "Not synchronised");
        let r = json!({"chrony": unsynced, "time_ns": 10, "controller_before_ns": 0,
                       "controller_after_ns": 4});
        assert_eq!(from_preflight(&r, None).unwrap().method, "bracket");
    }

    #[test]
    fn the_pairwise_bound_adds_the_two_largest() {
        let h = |b: f64| {
            Some(HostClock {
                method: "bracket".into(),
                bound_ms: b,
            })
        };
        assert_eq!(pairwise_bound_ms(&[h(1.0), h(5.0), h(2.0)]), Some(7.0));
        assert_eq!(pairwise_bound_ms(&[h(0.0)]), Some(0.0));
        assert_eq!(pairwise_bound_ms(&[h(1.0), None]), None);
    }
}
