//! Testbed files: the committee file everyone reads, and one secret key file per core.
//!
//! The committee file holds the genesis nonce, the protocol constants (GC_DEPTH,
//! CHECKPOINT_INTERVAL), the instance id they hash into, and per core its index, address, ed25519
//! public key, stake and TLS certificate (DER, hex). Loading it recomputes the instance id and
//! refuses a file whose id does not match (PROTOCOL.md §1). Drivers and clients pin each core's
//! certificate from it. It holds nothing secret. A key file holds one core's ed25519 secret and TLS private key and is written
//! readable by its owner only.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sleepyseal_core::committee::{Authority, CommitteeError, ProtocolConstants};
use sleepyseal_core::{AuthorityIndex, Committee, Digest, KeyPair, PublicKey, Stake};

/// Why a field of a testbed file does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// Hex text of odd length.
    #[error("odd number of hex digits ({0})")]
    OddLength(usize),
    /// A character that is not a hex digit.
    #[error("not a hex digit: {0:?}")]
    NotHex(char),
    /// Decoded bytes of the wrong length.
    #[error("expected {expected} bytes, got {got}")]
    Length {
        /// Bytes the field holds.
        expected: usize,
        /// Bytes decoded.
        got: usize,
    },
    /// A committee file of another format version.
    #[error("unsupported version {0} (this build reads version {COMMITTEE_FILE_VERSION}; version 1 files predate the protocol constants: write a new testbed with `sleepyseal genesis`)")]
    Version(u32),
    /// Not a socket address.
    #[error("{0}")]
    Address(std::net::AddrParseError),
    /// More cores than authority indices (u16).
    #[error("too many cores: {0}")]
    TooManyCores(usize),
    /// Fewer addresses than cores.
    #[error("{addresses} addresses for {cores} cores")]
    TooFewAddresses {
        /// Cores.
        cores: usize,
        /// Addresses given.
        addresses: usize,
    },
}

/// What can go wrong with testbed files.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file that is not the expected JSON.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A field that does not decode.
    #[error("{path}: field {field}: {reason}")]
    Field {
        /// The file.
        path: PathBuf,
        /// Which field.
        field: String,
        /// Why.
        reason: FieldError,
    },
    /// The committee itself is invalid.
    #[error("{path}: {source}")]
    Committee {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: CommitteeError,
    },
    /// A key file that does not belong to this committee.
    #[error("{path}: key of core {index} does not match the committee's public key")]
    KeyMismatch {
        /// The file.
        path: PathBuf,
        /// The core.
        index: u16,
    },
    /// Generating a TLS certificate.
    #[error("TLS certificate generation: {0}")]
    Certificate(String),
}

/// The committee file format this build writes and reads.
pub const COMMITTEE_FILE_VERSION: u32 = 2;

/// One core's entry in the committee file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthorityEntry {
    /// Its index (entries are in index order).
    pub index: u16,
    /// Where its QUIC endpoint listens.
    pub address: String,
    /// Its ed25519 public key (hex).
    pub public_key: String,
    /// Its stake.
    pub stake: u64,
    /// Its self-signed TLS certificate (DER, hex), pinned by drivers and clients.
    pub tls_certificate: String,
}

/// The committee file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitteeFile {
    /// Format version.
    pub version: u32,
    /// The genesis nonce (hex): what makes two committees of the same keys two instances.
    pub nonce: String,
    /// GC_DEPTH (PROTOCOL.md §4.6), the same for every core.
    pub gc_depth: u64,
    /// CHECKPOINT_INTERVAL (PROTOCOL.md §8a), the same for every core.
    pub checkpoint_interval: u64,
    /// The protocol instance (hex): every signed message is bound to it. It is the hash of the
    /// nonce, every (index, key, stake) and the constants, and is checked when the file loads.
    pub instance: String,
    /// The cores.
    pub authorities: Vec<AuthorityEntry>,
}

/// Only the version of a committee file, read before the rest.
#[derive(Deserialize)]
struct FileVersion {
    version: u32,
}

/// One core's secret key file.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyFile {
    /// Which core.
    pub index: u16,
    /// ed25519 secret seed (hex).
    pub secret: String,
    /// TLS private key (PKCS#8 DER, hex).
    pub tls_key: String,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyFile {{ index: {}, .. }}", self.index)
    }
}

/// A committee as loaded from its file: the protocol committee plus transport identities.
#[derive(Clone, Debug)]
pub struct Testbed {
    /// The committee.
    pub committee: Arc<Committee>,
    /// Per core, its pinned TLS certificate (DER).
    pub certificates: Vec<Vec<u8>>,
    /// Per core, its socket address.
    pub addresses: Vec<std::net::SocketAddr>,
}

/// A core's secrets as loaded from its key file.
pub struct CoreKeys {
    /// Which core.
    pub index: AuthorityIndex,
    /// Its signing key.
    pub key: KeyPair,
    /// Its TLS private key (PKCS#8 DER).
    pub tls_key: Vec<u8>,
}

/// Settings of `genesis`.
#[derive(Clone, Debug)]
pub struct GenesisOptions {
    /// Stake of each core (the number of cores is its length).
    pub stakes: Vec<u64>,
    /// Host every core listens on.
    pub host: String,
    /// Port of core 0; core i listens on `base_port + i`.
    pub base_port: u16,
    /// Deterministic ed25519 keys from this seed (local testbeds), else random keys.
    pub seed: Option<u64>,
    /// One `host:port` per core (a cluster: each core on its own host); replaces `host` and
    /// `base_port` when given.
    pub addresses: Option<Vec<String>>,
    /// GC_DEPTH and CHECKPOINT_INTERVAL of the instance.
    pub constants: ProtocolConstants,
}

/// Writes `committee.json` and `core-<i>.key` into `dir`. Returns the committee file's path.
pub fn genesis(dir: &Path, options: &GenesisOptions) -> Result<PathBuf, ConfigError> {
    fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
    let mut authorities = Vec::new();
    let mut members = Vec::new();
    let nonce = match options.seed {
        Some(seed) => seed.to_le_bytes().to_vec(),
        None => random_bytes::<16>().to_vec(),
    };
    for (i, stake) in options.stakes.iter().enumerate() {
        let index = u16::try_from(i).map_err(|_| ConfigError::Field {
            path: dir.to_path_buf(),
            field: "cores".into(),
            reason: FieldError::TooManyCores(options.stakes.len()),
        })?;
        let key = match options.seed {
            Some(seed) => KeyPair::deterministic(seed, index),
            None => KeyPair::from_secret(random_bytes::<32>()),
        };
        let name = server_name(AuthorityIndex(index));
        let certified = rcgen::generate_simple_self_signed(vec![name])
            .map_err(|e| ConfigError::Certificate(e.to_string()))?;
        let address = match &options.addresses {
            Some(addresses) => addresses.get(i).cloned().ok_or(ConfigError::Field {
                path: dir.to_path_buf(),
                field: "addresses".into(),
                reason: FieldError::TooFewAddresses {
                    cores: options.stakes.len(),
                    addresses: addresses.len(),
                },
            })?,
            None => format!(
                "{}:{}",
                options.host,
                u32::from(options.base_port) + i as u32
            ),
        };
        members.push(Authority {
            index: AuthorityIndex(index),
            public_key: key.public(),
            stake: Stake(*stake),
            address: address.clone(),
        });
        authorities.push(AuthorityEntry {
            index,
            address,
            public_key: to_hex(&key.public().0),
            stake: *stake,
            tls_certificate: to_hex(certified.cert.der()),
        });
        let key_file = KeyFile {
            index,
            secret: to_hex(&key.secret()),
            tls_key: to_hex(certified.key_pair.serialized_der()),
        };
        write_secret(&dir.join(format!("core-{i}.key")), &key_file)?;
    }
    let committee = Committee::genesis(&nonce, members, options.constants).map_err(|source| {
        ConfigError::Committee {
            path: dir.to_path_buf(),
            source,
        }
    })?;
    let file = CommitteeFile {
        version: COMMITTEE_FILE_VERSION,
        nonce: to_hex(&nonce),
        gc_depth: options.constants.gc_depth,
        checkpoint_interval: options.constants.checkpoint_interval,
        instance: committee.instance().to_hex(),
        authorities,
    };
    let path = dir.join("committee.json");
    let text = serde_json::to_string_pretty(&file).expect("serializable");
    fs::write(&path, text + "\n").map_err(|source| io(&path, source))?;
    // Fail now, not at start-up, if what was written does not load.
    load_testbed(&path)?;
    Ok(path)
}

/// The TLS server name of core `index` (its certificate's subject alternative name).
pub fn server_name(index: AuthorityIndex) -> String {
    format!("core-{}.sleepyseal", index.0)
}

/// Loads and checks a committee file: its instance id must be the one its nonce, authorities and
/// constants hash to.
pub fn load_testbed(path: &Path) -> Result<Testbed, ConfigError> {
    let field = field_error(path);
    // The version first, so an old file says what it is rather than which field it lacks.
    let version: FileVersion = read_json(path)?;
    if version.version != COMMITTEE_FILE_VERSION {
        return Err(field("version", FieldError::Version(version.version)));
    }
    let file: CommitteeFile = read_json(path)?;
    let instance = Digest(from_hex::<32>(&file.instance).map_err(|r| field("instance", r))?);
    let nonce = from_hex_vec(&file.nonce).map_err(|r| field("nonce", r))?;
    let constants = ProtocolConstants {
        gc_depth: file.gc_depth,
        checkpoint_interval: file.checkpoint_interval,
    };
    let mut authorities = Vec::new();
    let mut certificates = Vec::new();
    let mut addresses = Vec::new();
    for (i, a) in file.authorities.iter().enumerate() {
        let name = |f: &str| format!("authorities[{i}].{f}");
        let public_key =
            PublicKey(from_hex::<32>(&a.public_key).map_err(|r| field(&name("public_key"), r))?);
        let address: std::net::SocketAddr = a
            .address
            .parse()
            .map_err(|e| field(&name("address"), FieldError::Address(e)))?;
        let certificate =
            from_hex_vec(&a.tls_certificate).map_err(|r| field(&name("tls_certificate"), r))?;
        authorities.push(Authority {
            index: AuthorityIndex(a.index),
            public_key,
            stake: Stake(a.stake),
            address: a.address.clone(),
        });
        certificates.push(certificate);
        addresses.push(address);
    }
    let committee =
        Committee::load(instance, &nonce, authorities, constants).map_err(|source| {
            ConfigError::Committee {
                path: path.to_path_buf(),
                source,
            }
        })?;
    Ok(Testbed {
        committee: Arc::new(committee),
        certificates,
        addresses,
    })
}

/// Loads a key file and checks it against the committee.
pub fn load_keys(path: &Path, testbed: &Testbed) -> Result<CoreKeys, ConfigError> {
    let file: KeyFile = read_json(path)?;
    let field = field_error(path);
    let key = KeyPair::from_secret(from_hex::<32>(&file.secret).map_err(|r| field("secret", r))?);
    let tls_key = from_hex_vec(&file.tls_key).map_err(|r| field("tls_key", r))?;
    let index = AuthorityIndex(file.index);
    let matches = testbed
        .committee
        .authority(index)
        .is_some_and(|a| a.public_key == key.public());
    if !matches {
        return Err(ConfigError::KeyMismatch {
            path: path.to_path_buf(),
            index: file.index,
        });
    }
    Ok(CoreKeys {
        index,
        key,
        tls_key,
    })
}

fn write_secret(path: &Path, key: &KeyFile) -> Result<(), ConfigError> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(key).expect("serializable") + "\n";
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|source| io(path, source))?;
    file.write_all(text.as_bytes())
        .map_err(|source| io(path, source))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| io(path, source))?;
    serde_json::from_str(&text).map_err(|source| ConfigError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds the error for a field of the file at `path` that does not decode.
fn field_error(path: &Path) -> impl Fn(&str, FieldError) -> ConfigError + '_ {
    move |field, reason| ConfigError::Field {
        path: path.to_path_buf(),
        field: field.to_string(),
        reason,
    }
}

fn io(path: &Path, source: std::io::Error) -> ConfigError {
    ConfigError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the operating system's random source works");
    out
}

/// Lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn from_hex_vec(s: &str) -> Result<Vec<u8>, FieldError> {
    if s.len() % 2 != 0 {
        return Err(FieldError::OddLength(s.len()));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(FieldError::NotHex(c as char)),
    };
    s.as_bytes()
        .chunks(2)
        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

fn from_hex<const N: usize>(s: &str) -> Result<[u8; N], FieldError> {
    let bytes = from_hex_vec(s)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| FieldError::Length {
        expected: N,
        got: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(to_hex(&bytes), "0001abff");
        assert_eq!(from_hex::<4>("0001ABff").unwrap(), bytes);
        assert!(from_hex::<4>("0001ab").is_err());
        assert!(from_hex::<2>("0g01").is_err());
        assert!(from_hex_vec("abc").is_err());
    }

    #[test]
    fn genesis_writes_a_loadable_testbed_without_secrets() {
        let dir = std::env::temp_dir().join(format!("sleepyseal-genesis-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let options = GenesisOptions {
            stakes: vec![1, 1, 2, 1],
            host: "127.0.0.1".into(),
            base_port: 9100,
            seed: None,
            addresses: None,
            constants: ProtocolConstants::default(),
        };
        let path = genesis(&dir, &options).unwrap();
        let testbed = load_testbed(&path).unwrap();
        assert_eq!(testbed.committee.size(), 4);
        assert_eq!(testbed.addresses[3].port(), 9103);
        let text = fs::read_to_string(&path).unwrap();
        for i in 0..4 {
            let keys = load_keys(&dir.join(format!("core-{i}.key")), &testbed).unwrap();
            assert_eq!(keys.index, AuthorityIndex(i));
            assert!(!text.contains(&to_hex(&keys.key.secret())), "secret leaked");
            assert!(!text.contains(&to_hex(&keys.tls_key)), "TLS key leaked");
        }
        // A key file of another committee is refused.
        let other = dir.join("other");
        genesis(&other, &options).unwrap();
        assert!(matches!(
            load_keys(&other.join("core-0.key"), &testbed),
            Err(ConfigError::KeyMismatch { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The protocol constants are part of the instance: a file whose depth, interval or stake
    /// was edited after genesis no longer loads, another depth makes another instance, and a
    /// file of the old format says what to do.
    #[test]
    fn an_edited_committee_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("sleepyseal-edited-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let options = GenesisOptions {
            stakes: vec![1; 4],
            host: "127.0.0.1".into(),
            base_port: 9200,
            seed: Some(7),
            addresses: None,
            constants: ProtocolConstants {
                gc_depth: 20,
                checkpoint_interval: 40,
            },
        };
        let path = genesis(&dir, &options).unwrap();
        let loaded = load_testbed(&path).unwrap();
        assert_eq!(loaded.committee.constants(), options.constants);
        let original: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let edit = |key: &str, value: serde_json::Value| {
            let mut v = original.clone();
            v[key] = value;
            fs::write(&path, v.to_string()).unwrap();
            load_testbed(&path)
        };
        for (key, value) in [
            ("gc_depth", serde_json::json!(50)),
            ("checkpoint_interval", serde_json::json!(41)),
            ("nonce", serde_json::json!("00")),
        ] {
            let refused = edit(key, value);
            assert!(
                matches!(
                    refused,
                    Err(ConfigError::Committee {
                        source: CommitteeError::InstanceMismatch { .. },
                        ..
                    })
                ),
                "{key} edited: {refused:?}"
            );
        }
        let zero = edit("gc_depth", serde_json::json!(0));
        assert!(
            matches!(
                zero,
                Err(ConfigError::Committee {
                    source: CommitteeError::BadConstant {
                        name: "gc_depth",
                        ..
                    },
                    ..
                })
            ),
            "{zero:?}"
        );
        let old = edit("version", serde_json::json!(1)).unwrap_err();
        assert!(old.to_string().contains("sleepyseal genesis"), "{old}");
        let mut stake = original.clone();
        stake["authorities"][2]["stake"] = serde_json::json!(2);
        fs::write(&path, stake.to_string()).unwrap();
        assert!(load_testbed(&path).is_err(), "an edited stake loads");

        // The same seed and keys with another depth: another instance.
        let other = genesis(
            &dir.join("other"),
            &GenesisOptions {
                constants: ProtocolConstants {
                    gc_depth: 21,
                    ..options.constants
                },
                ..options.clone()
            },
        )
        .unwrap();
        let other = load_testbed(&other).unwrap();
        assert_ne!(other.committee.instance(), loaded.committee.instance());
        fs::remove_dir_all(&dir).unwrap();
    }
}
