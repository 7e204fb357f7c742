//! # sleepyseal-core: the passive core
//!
//! One validator's protocol state machine. It never opens a connection, never spawns a task,
//! never reads a clock: a server (or the simulator) hands it verified requests with the current
//! time and gets back a reply plus the writes that must be durable before that reply leaves.
//!
//! ## Layout
//! | module | contents |
//! |---|---|
//! | [`types`] | newtypes: [`Round`], [`AuthorityIndex`], [`Stake`], [`Digest`], [`Millis`] |
//! | [`committee`] | committee, thresholds Q/V, the stake-weighted [`LeaderSchedule`] |
//! | [`hash`], [`codec`], [`limits`] | domain-separated hashing, canonical codec, hard size limits |
//! | [`crypto`] | ed25519 under ZIP-215 rules, batch verification over rayon |
//! | [`messages`], [`protocol`], [`error`] | headers, votes, certificates, payloads; requests, replies, typed errors |
//! | [`verify`] | the verify stage and [`Verified`], which only it can build |
//! | [`dag`], [`tusk`] | the certificate DAG; the commit rule as a pure function |
//! | [`mempool`] | bounded transaction queue with back-pressure, kept as stored entries an own payload slices |
//! | [`store`] | the [`Store`] trait, an in-memory store and the durable store (a metadata log beside payload segments, each payload written once) |
//! | [`machine`] | the [`Core`] state machine |
//!
//! ## Contract
//! - Safety never depends on the caller: every signature and digest is checked (by [`Verifier`]
//!   before [`Core::handle`]), and each honest core signs at most one header per (author, round)
//!   over its whole life, provided the caller makes each returned [`WriteBatch`] durable before
//!   releasing the reply that came with it.
//! - No input panics: anything a peer sends is answered with a [`CoreError`]. A broken internal
//!   invariant is an `assert!`, kept on in release builds.

pub mod checkpoint;
pub mod codec;
pub mod committee;
pub mod crypto;
pub mod dag;
pub mod error;
pub mod hash;
pub mod limits;
pub mod machine;
pub mod mempool;
pub mod messages;
pub mod protocol;
pub mod store;
pub mod testkit;
pub mod tusk;
pub mod types;
pub mod verify;

pub use committee::{Authority, Committee, LeaderSchedule, StakeWeightedLeaders};
pub use crypto::{KeyPair, PublicKey, Signature};
pub use error::CoreError;
pub use machine::{Core, CoreConfig, CoreCounters};
pub use messages::{Certificate, Header, Payload, SignedHeader, Vote};
pub use protocol::{CommittedEntry, Request, RequestBody, Response, Status, Summary};
pub use store::{MemStore, Store, WriteBatch};
pub use types::{AuthorityIndex, Digest, Millis, Round, Stake};
pub use verify::{Verified, Verifier};
