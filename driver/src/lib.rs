//! # sleepyseal-driver
//!
//! Drivers carry everything between passive cores. This crate holds:
//! - [`state`]: the sans-IO [`DriverState`] (summaries in, requests out, votes into certificates,
//!   catch-up with `Fetch`/`Sync`), PROTOCOL.md §7–§8;
//! - [`runner`]: the driver process, [`DriverState`] driven over QUIC (`sleepyseal driver`);
//! - [`sim`]: the deterministic simulator of n cores and m drivers exchanging real encoded
//!   requests over a seeded faulty network, with the invariant checkers of PROTOCOL.md §9;
//! - [`fuzz`]: the fuzz targets (request and response decoding, `Core::handle` on structured
//!   hostile requests) and the counting allocator they run under.

pub mod fuzz;
pub mod runner;
pub mod sim;
pub mod state;

pub use state::{DriverConfig, DriverState, Outgoing};
