//! # sleepyseal-driver
//!
//! Drivers carry everything between passive cores. This crate holds:
//! - [`state`]: the sans-IO [`DriverState`] (summaries in, requests out, votes into certificates,
//!   catch-up with `Fetch`/`Sync`), PROTOCOL.md §7–§8;
//! - [`runner`]: the driver process, [`DriverState`] driven over QUIC (`sleepyseal driver`), or
//!   inside a core process beside its home core (`sleepyseal core --home-driver`);
//! - [`link`]: how the runner reaches each core (QUIC, or the in-process link of a home core);
//!
//! The simulator, the fuzz harness and the planted faults live in `sleepyseal-sim`, so the binary
//! that runs drivers links none of them.

pub mod link;
pub mod runner;
pub mod state;

pub use state::{DriverConfig, DriverState, Outgoing};
