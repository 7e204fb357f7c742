//! WAN profiles: every shipped profile parses, hosts round-trip through TOML, and every invalid
//! profile is refused with its own typed error.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use sleepyseal_net::wan::{Wan, WanError, WanProfile};

/// Two regions, every direction covered; the error cases below each break one thing.
const VALID: &str = r#"
regions = ["a", "b"]
max_udp_payload_bytes = 1400
queue_ms = 50

[defaults]
jitter_ms = 1
loss = 0.01
bandwidth_mbps = 100

[[links]]
between = ["a", "a"]
delay_ms = 0.5

[[links]]
from = "a"
to = "b"
delay_ms = 20

[[links]]
from = "b"
to = "a"
delay_ms = 30
loss = 0

[[links]]
between = ["b", "b"]
delay_ms = 0.5

[hosts]
"198.18.0.1" = "a"
"#;

fn shipped_profiles() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/wan");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_shipped_profile_parses_and_round_trips() {
    let paths = shipped_profiles();
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["multi-region.toml", "one-region.toml", "two-region.toml"]
    );
    for path in &paths {
        let profile = WanProfile::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            profile.hosts().count(),
            0,
            "{}: hosts ship empty",
            path.display()
        );
        assert_eq!(profile.max_udp_payload_bytes(), 1_472);
        assert_eq!(
            WanProfile::from_toml_str(&profile.to_toml()).unwrap(),
            profile
        );
        // Shipped profiles are symmetric, and a region reaches itself fastest.
        for from in profile.regions() {
            for to in profile.regions() {
                let (there, back) = (
                    profile.link(from, to).unwrap(),
                    profile.link(to, from).unwrap(),
                );
                assert_eq!(there, back, "{}: {from} ⇄ {to}", path.display());
                assert!(profile.link(from, from).unwrap().delay <= there.delay);
            }
        }
    }
    let multi = WanProfile::load(&paths[0]).unwrap();
    assert_eq!(multi.regions().len(), 5);
    let rtt = |a: &str, b: &str| multi.link(a, b).unwrap().delay + multi.link(b, a).unwrap().delay;
    assert_eq!(rtt("us-east", "eu-west"), Duration::from_millis(70));
    assert_eq!(rtt("us-east", "ap-southeast"), Duration::from_millis(216));
    let two = WanProfile::load(&paths[2]).unwrap();
    assert_eq!(
        two.link("us-east", "eu-west").unwrap().delay,
        Duration::from_millis(35)
    );
}

#[test]
fn settings_resolve_from_links_and_defaults() {
    let profile = WanProfile::from_toml_str(VALID).unwrap();
    assert_eq!(profile.regions(), ["a", "b"]);
    let ab = profile.link("a", "b").unwrap();
    assert_eq!(ab.delay, Duration::from_millis(20));
    assert_eq!(ab.jitter, Duration::from_millis(1));
    assert_eq!(ab.loss, 0.01);
    assert_eq!(ab.bandwidth_bit_s, 100e6);
    let ba = profile.link("b", "a").unwrap();
    assert_eq!((ba.delay, ba.loss), (Duration::from_millis(30), 0.0));
    assert_eq!(
        profile.link("a", "a").unwrap().delay,
        Duration::from_micros(500)
    );
    assert_eq!(profile.link("a", "c"), None);
    assert_eq!(profile.max_udp_payload_bytes(), 1_400);
    assert_eq!(profile.queue(), Duration::from_millis(50));
    let minimal = r#"
        regions = ["x"]
        links = [{ between = ["x", "x"], delay_ms = 1, jitter_ms = 0, loss = 0, bandwidth_mbps = 1 }]
    "#;
    let minimal = WanProfile::from_toml_str(minimal).unwrap();
    assert_eq!(minimal.max_udp_payload_bytes(), 1_472);
    assert_eq!(minimal.queue(), Duration::from_millis(100));
}

#[test]
fn hosts_are_added_written_out_and_read_back() {
    let profile = WanProfile::from_toml_str(VALID).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let hosts = BTreeMap::from([
        (ip("198.18.0.1"), "a".to_string()),
        (ip("198.18.0.2"), "b".to_string()),
        (ip("fd00::3"), "b".to_string()),
    ]);
    let placed = profile.with_hosts(hosts).unwrap();
    assert_eq!(placed.region_of(ip("198.18.0.2")), Some("b"));
    assert_eq!(placed.region_of(ip("fd00::3")), Some("b"));
    assert_eq!(placed.region_of(ip("198.18.0.9")), None);
    let text = placed.to_toml();
    assert!(text.contains("\"198.18.0.2\" = \"b\""), "{text}");
    let read = WanProfile::from_toml_str(&text).unwrap();
    assert_eq!(read, placed);
    assert_eq!(read.hosts().count(), 3);

    let moved = BTreeMap::from([(ip("198.18.0.1"), "b".to_string())]);
    assert!(matches!(
        profile.with_hosts(moved),
        Err(WanError::HostConflict { ref existing, ref added, .. }) if existing == "a" && added == "b"
    ));
    // Two spellings of one address: written back once, in canonical form.
    let spelt = VALID.replace(
        "[hosts]\n",
        "[hosts]\n\"FD00::0:3\" = \"b\"\n\"fd00::3\" = \"b\"\n",
    );
    let spelt = WanProfile::from_toml_str(&spelt).unwrap();
    assert_eq!(spelt.region_of(ip("fd00::3")), Some("b"));
    assert_eq!(spelt.to_toml().matches("fd00::3").count(), 1);
    let clash = VALID.replace(
        "[hosts]\n",
        "[hosts]\n\"FD00::3\" = \"a\"\n\"fd00::3\" = \"b\"\n",
    );
    assert!(matches!(
        WanProfile::from_toml_str(&clash),
        Err(WanError::HostConflict { .. })
    ));
    let unknown = BTreeMap::from([(ip("198.18.0.5"), "c".to_string())]);
    assert!(matches!(
        profile.with_hosts(unknown),
        Err(WanError::UnknownRegion { ref region, ref at }) if region == "c" && at == "hosts"
    ));
}

#[test]
fn the_own_region_must_be_in_the_profile() {
    let profile = WanProfile::from_toml_str(VALID).unwrap();
    let wan = Wan::new(profile.clone(), "b", 3).unwrap();
    assert_eq!((wan.own_region(), wan.seed()), ("b", 3));
    assert!(matches!(
        Wan::new(profile, "c", 3),
        Err(WanError::UnknownRegion { ref at, .. }) if at == "own region"
    ));
    assert!(matches!(
        WanProfile::load("/nonexistent/profile.toml"),
        Err(WanError::Read { .. })
    ));
}

/// `VALID` with `from` replaced by `to` (which must occur).
fn broken(from: &str, to: &str) -> Result<WanProfile, WanError> {
    assert!(VALID.contains(from), "{from:?}");
    WanProfile::from_toml_str(&VALID.replacen(from, to, 1))
}

fn out_of_range(result: Result<WanProfile, WanError>) -> &'static str {
    match result {
        Err(WanError::OutOfRange { setting, .. }) => setting,
        other => panic!("expected OutOfRange, got {other:?}"),
    }
}

#[test]
fn shape_and_region_errors() {
    let many: Vec<String> = (0..65).map(|i| format!("\"r{i}\"")).collect();
    let many = format!("regions = [{}]", many.join(", "));
    // (text replaced in VALID, replacement, the error's Debug form or its start)
    let cases: [(&str, &str, &str); 17] = [
        ("regions = [", "regions = [[[", "Toml("),
        ("delay_ms = 20", "dealy_ms = 20", "Toml("),
        ("queue_ms = 50", r#"queue_ms = "50""#, "Toml("),
        (r#"regions = ["a", "b"]"#, "regions = []", "NoRegions"),
        (
            r#"regions = ["a", "b"]"#,
            r#"regions = ["a", "a"]"#,
            r#"DuplicateRegion("a")"#,
        ),
        (
            r#"regions = ["a", "b"]"#,
            r#"regions = ["a b", "b"]"#,
            r#"BadRegionName("a b")"#,
        ),
        (
            r#"regions = ["a", "b"]"#,
            &many,
            "TooManyRegions { count: 65, max: 64 }",
        ),
        (
            r#"to = "b""#,
            r#"to = "c""#,
            r#"UnknownRegion { region: "c", at: "links[1]" }"#,
        ),
        (
            r#""198.18.0.1" = "a""#,
            r#""198.18.0.1" = "z""#,
            r#"UnknownRegion { region: "z", at: "hosts" }"#,
        ),
        (
            r#""198.18.0.1""#,
            r#""198.18.0""#,
            r#"BadHostAddress("198.18.0")"#,
        ),
        (
            "from = \"b\"\nto = \"a\"",
            "from = \"b\"\nto = \"b\"",
            r#"DuplicateLink { from: "b", to: "b" }"#,
        ),
        (
            "from = \"b\"\nto = \"a\"",
            "from = \"a\"\nto = \"a\"",
            r#"DuplicateLink { from: "a", to: "a" }"#,
        ),
        (
            "[[links]]\nfrom = \"b\"\nto = \"a\"\ndelay_ms = 30\n",
            "",
            r#"MissingLink { from: "b", to: "a" }"#,
        ),
        (
            "from = \"a\"\nto = \"b\"",
            "from = \"a\"",
            "LinkEnds { index: 1 }",
        ),
        (
            r#"between = ["a", "a"]"#,
            "between = [\"a\", \"a\"]\nfrom = \"a\"\nto = \"a\"",
            "LinkEnds { index: 0 }",
        ),
        (
            r#"between = ["a", "a"]"#,
            r#"between = ["a", "a", "b"]"#,
            "LinkEnds { index: 0 }",
        ),
        (
            "bandwidth_mbps = 100\n",
            "\n",
            r#"MissingSetting { at: "links[0]", setting: "bandwidth_mbps" }"#,
        ),
    ];
    for (from, to, expected) in cases {
        let error = format!("{:?}", broken(from, to).unwrap_err());
        assert!(
            error.starts_with(expected),
            "{to:?}: {error}, expected {expected}"
        );
    }
}

#[test]
fn number_errors() {
    assert_eq!(
        out_of_range(broken("delay_ms = 20", "delay_ms = -1")),
        "delay_ms"
    );
    assert_eq!(
        out_of_range(broken("delay_ms = 20", "delay_ms = 20000")),
        "delay_ms"
    );
    assert_eq!(
        out_of_range(broken("jitter_ms = 1", "jitter_ms = -0.5")),
        "jitter_ms"
    );
    assert_eq!(out_of_range(broken("loss = 0.01", "loss = 1.5")), "loss");
    assert_eq!(out_of_range(broken("loss = 0.01", "loss = -0.1")), "loss");
    assert_eq!(
        out_of_range(broken("bandwidth_mbps = 100", "bandwidth_mbps = 0")),
        "bandwidth_mbps"
    );
    assert_eq!(
        out_of_range(broken("bandwidth_mbps = 100", "bandwidth_mbps = -5")),
        "bandwidth_mbps"
    );
    assert_eq!(
        out_of_range(broken("= 1400", "= 1199")),
        "max_udp_payload_bytes"
    );
    assert_eq!(
        out_of_range(broken("= 1400", "= 65528")),
        "max_udp_payload_bytes"
    );
    assert_eq!(
        out_of_range(broken("= 1400", "= -1")),
        "max_udp_payload_bytes"
    );
    assert_eq!(
        out_of_range(broken("queue_ms = 50", "queue_ms = 0")),
        "queue_ms"
    );
    for (from, to, key) in [
        ("loss = 0.01", "loss = nan", "loss"),
        ("delay_ms = 20", "delay_ms = inf", "delay_ms"),
        ("jitter_ms = 1", "jitter_ms = -inf", "jitter_ms"),
        (
            "bandwidth_mbps = 100",
            "bandwidth_mbps = nan",
            "bandwidth_mbps",
        ),
    ] {
        assert!(
            matches!(broken(from, to), Err(WanError::NotFinite { setting, .. }) if setting == key),
            "{to}"
        );
    }
    // The edges of every range are allowed.
    for (from, to) in [
        ("= 1400", "= 1200"),
        ("= 1400", "= 65527"),
        ("loss = 0.01", "loss = 1"),
        ("delay_ms = 20", "delay_ms = 0"),
        ("jitter_ms = 1", "jitter_ms = 0"),
    ] {
        broken(from, to).unwrap_or_else(|e| panic!("{to}: {e}"));
    }
}

#[test]
fn the_readme_example_is_a_valid_profile() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/wan/README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let start = readme.find("```toml\n").expect("a TOML example") + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let profile = WanProfile::from_toml_str(&readme[start..end]).unwrap();
    let delay = |a, b| profile.link(a, b).unwrap().delay;
    assert_eq!(delay("us-east", "eu-west"), Duration::from_millis(35));
    assert_eq!(delay("eu-west", "us-east"), Duration::from_millis(36));
    assert_eq!(profile.hosts().count(), 2);
}
