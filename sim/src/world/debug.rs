//! Debugging output on stderr: the state of a finished world (`--debug-dump`) and one-line
//! descriptions of replies (`--trace-instance`). Nothing here touches the trace or the RNG.

use sleepyseal_core::protocol::{RequestBody, Response};

use super::World;

/// A reply in one line: its kind, counts and the summary's round and status.
fn describe_response(response: &Response) -> String {
    match response {
        Response::Summary(s) => format!("Summary(r{} {:?})", s.round.0, s.status),
        Response::Votes {
            votes,
            rejected,
            summary,
        } => format!(
            "Votes({} votes, rejected {:?}, r{} {:?})",
            votes.len(),
            rejected
                .iter()
                .map(|(_, e)| e.to_string())
                .collect::<Vec<_>>(),
            summary.round.0,
            summary.status
        ),
        Response::Certificates {
            certificates,
            payloads,
        } => format!(
            "Certificates({} certs, {} payloads)",
            certificates.len(),
            payloads.len()
        ),
        Response::Error(e) => format!("Error({e})"),
        other => format!("{other:?}").chars().take(80).collect(),
    }
}

/// `--trace-instance`: one line per reply the traced instance sends a driver.
pub(super) fn trace_reply(
    now: u64,
    to: usize,
    instance: usize,
    request: Option<&RequestBody>,
    response: &Response,
) {
    eprintln!(
        "t={now} driver {to} -> {instance}: {} => {}",
        request.map_or("?".into(), sleepyseal_driver::state::kind),
        describe_response(response)
    );
}

/// Debug view of a finished world (`--debug-dump`).
impl World {
    pub(super) fn debug_dump(&self) {
        eprintln!("time {} ms, {} events", self.now, self.events);
        for (d, driver) in self.drivers.iter().enumerate() {
            if let Some(state) = &driver.state {
                eprintln!(
                    "driver {d}: certs {} top {}",
                    state.certificate_count(),
                    state.top_round()
                );
                for a in self.committee.indices() {
                    eprintln!("  core {a}: {}", state.describe(a));
                }
            }
        }
        for (i, n) in self.instances.iter().enumerate() {
            match n.core.as_ref() {
                None => eprintln!("instance {i}: down"),
                Some(c) => eprintln!(
                    "instance {i}: round {} committed {} index {} gc {} dag {} floor {} mempool {}",
                    c.round(),
                    c.consensus().last_committed_round,
                    c.consensus().consensus_index,
                    c.gc_round(),
                    c.dag().len(),
                    c.dag().floor(),
                    c.mempool_len()
                ),
            }
        }
    }
}
