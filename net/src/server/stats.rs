//! The core server's counters: atomics the pipeline updates, registered once as Prometheus
//! metrics (prefix `sleepyseal_core_`), and the core's own counters served by a collector.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use sleepyseal_core::CoreCounters;

use crate::metrics::{self, histogram, AtomicCounter, AtomicGauge, COUNT_BUCKETS, SECONDS_BUCKETS};

/// Counters of a running server, for logs and metrics. The registered ones are served by
/// [`ServerStats::exposition`]; the plain atomics only feed the logs.
#[derive(Debug)]
pub struct ServerStats {
    /// Requests answered.
    pub requests: AtomicCounter,
    /// Requests answered `Busy` by a full queue.
    pub busy: AtomicCounter,
    /// Requests that did not decode.
    pub malformed: AtomicCounter,
    /// Payload bytes (transactions of `Submit`s, payloads carried by bundles and `Sync`) in
    /// requests that came over the network.
    pub payload_bytes_received: AtomicCounter,
    /// Payload bytes (own payloads in summaries, fetched and committed payloads, transaction
    /// prefixes) in replies written to the network.
    pub payload_bytes_sent: AtomicCounter,
    /// The same bytes by direction and by the kind of request that brought or asked for them:
    /// where a data path spends its transfers (`submit` received is the clients' share,
    /// `header_bundle` and `cert_bundle` the drivers' carriage, `fetch_payloads` sent what
    /// on-demand carriage fetched back).
    payload_bytes_by_request: Family<PayloadLabels, Counter>,
    /// Bytes the store appended to its metadata log.
    pub store_log_bytes: AtomicCounter,
    /// Bytes the store appended to its payload segments (each payload once).
    pub store_segment_bytes: AtomicCounter,
    /// Zero bytes the store wrote after each commit's payload data so that the next starts on a
    /// block (direct I/O).
    pub store_segment_padding_bytes: AtomicCounter,
    /// The store's `fsync`/`fdatasync` calls.
    pub store_syncs: AtomicCounter,
    /// Bytes the store's compactions wrote.
    pub store_compaction_bytes: AtomicCounter,
    /// Group commits.
    pub group_commits: AtomicUsize,
    /// Requests in those group commits.
    pub grouped_requests: AtomicUsize,
    /// Verify batches.
    pub verify_batches: AtomicUsize,
    /// Connections open now.
    pub connections: AtomicGauge,
    /// Connections refused, or closed to make room, by reason (`server::admission`).
    refused_connections: Family<ReasonLabel, Counter>,
    /// Connection attempts answered with a QUIC retry (address validation).
    pub retries_sent: AtomicCounter,
    /// Request streams whose connection had spent its request rate and waited for it.
    pub rate_limited_streams: AtomicCounter,
    /// The core's round (after the latest group commit).
    pub round: AtomicGauge,
    /// Round of the latest committed leader.
    pub last_committed_round: AtomicGauge,
    /// Length of the committed sequence.
    pub consensus_index: AtomicCounter,
    /// Transactions in the mempool.
    pub mempool: AtomicGauge,
    /// Committed entries of an install's gap not filled yet (PROTOCOL.md §8a.5).
    pub gap_entries: AtomicGauge,
    /// The sum of the core's configured storage bounds (PROTOCOL.md §8a.6), set at start.
    pub store_bound_bytes: AtomicGauge,
    /// Requests waiting for the verify thread.
    pub verify_queue: AtomicGauge,
    /// Requests waiting for the core thread.
    pub core_queue: AtomicGauge,
    /// Long polls held.
    pub parked: AtomicGauge,
    /// Time from a request's arrival (decoded, or handed over the in-process link) to the core
    /// thread taking it, by request kind: the verify stage and both queues.
    queue_wait_seconds: Family<KindLabel, Histogram, fn() -> Histogram>,
    /// Seconds per verify batch.
    pub verify_seconds: Histogram,
    /// Requests per verify batch.
    pub verify_batch_requests: Histogram,
    /// Seconds per store commit (write + fsync of one group).
    pub store_commit_seconds: Histogram,
    /// Requests per group commit.
    pub group_requests: Histogram,
    /// Header creation → commit at this core, for every committed entry.
    pub consensus_latency_seconds: Histogram,
    /// The core's own counters, copied after each group commit.
    pub core_counters: Arc<Mutex<CoreCounters>>,
    /// The newest own header the core built (with its payload), for a driver in the process
    /// ([`LocalLink::own_headers`](super::LocalLink::own_headers)). Not a metric.
    pub own_headers: tokio::sync::watch::Sender<Option<super::OwnHeader>>,
    /// Every served metric, registered once.
    registry: Registry,
}

impl Default for ServerStats {
    fn default() -> ServerStats {
        let mut stats = ServerStats {
            requests: AtomicCounter::default(),
            busy: AtomicCounter::default(),
            malformed: AtomicCounter::default(),
            payload_bytes_received: AtomicCounter::default(),
            payload_bytes_sent: AtomicCounter::default(),
            payload_bytes_by_request: Family::default(),
            store_log_bytes: AtomicCounter::default(),
            store_segment_bytes: AtomicCounter::default(),
            store_segment_padding_bytes: AtomicCounter::default(),
            store_syncs: AtomicCounter::default(),
            store_compaction_bytes: AtomicCounter::default(),
            group_commits: AtomicUsize::new(0),
            grouped_requests: AtomicUsize::new(0),
            verify_batches: AtomicUsize::new(0),
            connections: AtomicGauge::default(),
            refused_connections: Family::default(),
            retries_sent: AtomicCounter::default(),
            rate_limited_streams: AtomicCounter::default(),
            round: AtomicGauge::default(),
            last_committed_round: AtomicGauge::default(),
            consensus_index: AtomicCounter::default(),
            mempool: AtomicGauge::default(),
            gap_entries: AtomicGauge::default(),
            store_bound_bytes: AtomicGauge::default(),
            verify_queue: AtomicGauge::default(),
            core_queue: AtomicGauge::default(),
            parked: AtomicGauge::default(),
            queue_wait_seconds: Family::new_with_constructor(|| histogram(SECONDS_BUCKETS)),
            verify_seconds: histogram(SECONDS_BUCKETS),
            verify_batch_requests: histogram(COUNT_BUCKETS),
            store_commit_seconds: histogram(SECONDS_BUCKETS),
            group_requests: histogram(COUNT_BUCKETS),
            consensus_latency_seconds: histogram(SECONDS_BUCKETS),
            core_counters: Arc::default(),
            own_headers: tokio::sync::watch::Sender::new(None),
            registry: Registry::with_prefix("sleepyseal_core"),
        };
        stats.register();
        stats
    }
}

/// Labels of [`ServerStats::payload_bytes_by_request`]: direction, then request kind.
type PayloadLabels = [(&'static str, &'static str); 2];

/// Label of a metric by request kind.
type KindLabel = [(&'static str, &'static str); 1];

/// Label of a metric by reason.
type ReasonLabel = [(&'static str, &'static str); 1];

impl ServerStats {
    /// Counts `bytes` of payload received over the network in a request of `kind`.
    pub fn payload_received(&self, kind: &'static str, bytes: usize) {
        self.count_payload("received", kind, bytes, &self.payload_bytes_received);
    }

    /// Counts `bytes` of payload sent over the network in the reply to a request of `kind`.
    pub fn payload_sent(&self, kind: &'static str, bytes: usize) {
        self.count_payload("sent", kind, bytes, &self.payload_bytes_sent);
    }

    /// Counts a connection refused (or closed to make room) for `reason`.
    pub(super) fn refused_connection(&self, reason: &'static str) {
        self.refused_connections
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Connections refused or closed to make room for `reason` so far.
    pub fn refused_connections(&self, reason: &'static str) -> u64 {
        self.refused_connections
            .get_or_create(&[("reason", reason)])
            .get()
    }

    /// Records that the core thread took a request of `kind` `waited` after it arrived.
    pub(super) fn queue_waited(&self, kind: &'static str, waited: std::time::Duration) {
        self.queue_wait_seconds
            .get_or_create(&[("request", kind)])
            .observe(waited.as_secs_f64());
    }

    fn count_payload(
        &self,
        direction: &'static str,
        kind: &'static str,
        bytes: usize,
        total: &AtomicCounter,
    ) {
        if bytes == 0 {
            return;
        }
        total.fetch_add(bytes as u64, Ordering::Relaxed);
        self.payload_bytes_by_request
            .get_or_create(&[("direction", direction), ("request", kind)])
            .inc_by(bytes as u64);
    }

    /// The Prometheus exposition of these counters.
    pub fn exposition(&self) -> String {
        metrics::encode(&self.registry)
    }

    /// Registers every served metric. Help texts get their final period from the registry.
    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "round",
            "Round of the latest own header",
            self.round.clone(),
        );
        r.register(
            "last_committed_round",
            "Round of the latest committed leader",
            self.last_committed_round.clone(),
        );
        r.register(
            "committed_certificates",
            "Length of the committed sequence",
            self.consensus_index.clone(),
        );
        r.register(
            "consensus_latency_seconds",
            "Header creation to commit at this core, per committed certificate",
            self.consensus_latency_seconds.clone(),
        );
        r.register_collector(Box::new(CoreCountersCollector(self.core_counters.clone())));
        self.register_pipeline();
    }

    /// Registers the data path's metrics: payload bytes over the network, the store's writes.
    fn register_data_path(&mut self) {
        let r = &mut self.registry;
        r.register(
            "payload_bytes_received",
            "Payload bytes in requests that came over the network (transactions, carried payloads)",
            self.payload_bytes_received.clone(),
        );
        r.register(
            "payload_bytes_sent",
            "Payload bytes in replies written to the network (own, fetched and committed payloads, transaction prefixes)",
            self.payload_bytes_sent.clone(),
        );
        r.register(
            "payload_bytes_by_request",
            "Payload bytes over the network by direction and by the kind of request that brought or asked for them",
            self.payload_bytes_by_request.clone(),
        );
        r.register(
            "store_log_bytes",
            "Bytes the store appended to its metadata log",
            self.store_log_bytes.clone(),
        );
        r.register(
            "store_segment_bytes",
            "Bytes the store appended to its payload segments",
            self.store_segment_bytes.clone(),
        );
        r.register(
            "store_segment_padding_bytes",
            "Zero bytes the store wrote after payload data to start the next commit on a block",
            self.store_segment_padding_bytes.clone(),
        );
        r.register(
            "store_syncs",
            "The store's fsync and fdatasync calls",
            self.store_syncs.clone(),
        );
        r.register(
            "store_compaction_bytes",
            "Bytes the store's compactions wrote",
            self.store_compaction_bytes.clone(),
        );
    }

    /// Registers the request pipeline's metrics: requests, stages, queues and connections.
    fn register_pipeline(&mut self) {
        let r = &mut self.registry;
        r.register("requests", "Requests answered", self.requests.clone());
        r.register(
            "busy_replies",
            "Requests answered Busy by a full queue",
            self.busy.clone(),
        );
        r.register(
            "malformed_requests",
            "Requests that did not decode or were too large",
            self.malformed.clone(),
        );
        self.register_data_path();
        let r = &mut self.registry;
        r.register(
            "verify_seconds",
            "Time to verify one batch of requests",
            self.verify_seconds.clone(),
        );
        r.register(
            "verify_batch_requests",
            "Requests verified together in one batch",
            self.verify_batch_requests.clone(),
        );
        r.register(
            "store_commit_seconds",
            "Write and fsync of one group commit",
            self.store_commit_seconds.clone(),
        );
        r.register(
            "group_commit_requests",
            "Requests handled in one group commit",
            self.group_requests.clone(),
        );
        r.register(
            "verify_queue_requests",
            "Requests waiting for the verify stage",
            self.verify_queue.clone(),
        );
        r.register(
            "core_queue_requests",
            "Verified requests waiting for the core thread",
            self.core_queue.clone(),
        );
        r.register(
            "queue_wait_seconds",
            "Arrival of a request to the core thread taking it (verify stage and queues), by request kind",
            self.queue_wait_seconds.clone(),
        );
        r.register(
            "parked_reads",
            "Long-poll reads held until entries commit",
            self.parked.clone(),
        );
        r.register(
            "mempool_transactions",
            "Transactions in the mempool",
            self.mempool.clone(),
        );
        r.register(
            "gap_entries",
            "Committed entries of an install's gap not filled yet (PROTOCOL.md 8a.5)",
            self.gap_entries.clone(),
        );
        r.register(
            "store_bound_bytes",
            "The sum of this core's configured storage bounds (PROTOCOL.md 8a.6)",
            self.store_bound_bytes.clone(),
        );
        r.register(
            "connections",
            "Connections open or completing their handshake",
            self.connections.clone(),
        );
        r.register(
            "refused_connections",
            "Connections refused, or closed to make room for a newcomer, by reason (stopping, per_address, per_prefix, connect_rate, full, handshake_timeout, evicted)",
            self.refused_connections.clone(),
        );
        r.register(
            "retries_sent",
            "Connection attempts answered with a QUIC retry to validate the source address",
            self.retries_sent.clone(),
        );
        r.register(
            "rate_limited_streams",
            "Request streams that waited because their connection had spent its request rate",
            self.rate_limited_streams.clone(),
        );
    }
}

/// Serves the core's own counters: a snapshot the core thread copies after each group commit, read
/// at scrape time.
#[derive(Debug)]
struct CoreCountersCollector(Arc<Mutex<CoreCounters>>);

impl Collector for CoreCountersCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = *self.0.lock().expect("not poisoned");
        // A collector's help text is written as given: no period added.
        let counters = [
            (
                "headers_built",
                "Own headers built and signed.",
                c.headers_built,
            ),
            (
                "proposed_payload_bytes",
                "Payload bytes proposed in own headers.",
                c.payload_bytes_proposed,
            ),
            (
                "votes_cast",
                "Votes cast for other authors' headers.",
                c.votes_cast,
            ),
            (
                "certificates_inserted",
                "Certificates newly inserted into the DAG.",
                c.certificates_inserted,
            ),
            (
                "committed_payload_bytes",
                "Payload bytes committed since start.",
                c.committed_payload_bytes,
            ),
            (
                "leaders_committed",
                "Leaders committed since start.",
                c.leaders_committed,
            ),
            (
                "own_headers_orphaned",
                "Own headers that fell below gc_round uncommitted.",
                c.own_headers_orphaned,
            ),
            (
                "requeued_transactions",
                "Transactions of orphaned own headers put back into the mempool.",
                c.transactions_requeued,
            ),
            (
                "checkpoints_signed",
                "Checkpoint states this core reached and signed (PROTOCOL.md 8a.1).",
                c.checkpoints_signed,
            ),
            (
                "checkpoints_installed",
                "Certified checkpoints this core installed (PROTOCOL.md 8a.3).",
                c.checkpoints_installed,
            ),
            (
                "gap_entries_filled",
                "Committed entries of an install's gap verified by fills (PROTOCOL.md 8a.5).",
                c.gap_entries_filled,
            ),
            (
                "possibly_duplicated_transactions",
                "Transactions of undecided own headers proposed again after FILL_TIMEOUT.",
                c.transactions_possibly_duplicated,
            ),
        ];
        for (name, help, value) in counters {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::sample;
    use crate::metrics::tests::families;

    /// The names, types and help texts served: what dashboards and the harness scrape.
    const FAMILIES: &[&str] = &[
        "sleepyseal_core_round gauge Round of the latest own header.",
        "sleepyseal_core_last_committed_round gauge Round of the latest committed leader.",
        "sleepyseal_core_committed_certificates_total counter Length of the committed sequence.",
        "sleepyseal_core_consensus_latency_seconds histogram Header creation to commit at this core, per committed certificate.",
        "sleepyseal_core_requests_total counter Requests answered.",
        "sleepyseal_core_busy_replies_total counter Requests answered Busy by a full queue.",
        "sleepyseal_core_malformed_requests_total counter Requests that did not decode or were too large.",
        "sleepyseal_core_payload_bytes_received_total counter Payload bytes in requests that came over the network (transactions, carried payloads).",
        "sleepyseal_core_payload_bytes_sent_total counter Payload bytes in replies written to the network (own, fetched and committed payloads, transaction prefixes).",
        "sleepyseal_core_payload_bytes_by_request_total counter Payload bytes over the network by direction and by the kind of request that brought or asked for them.",
        "sleepyseal_core_store_log_bytes_total counter Bytes the store appended to its metadata log.",
        "sleepyseal_core_store_segment_bytes_total counter Bytes the store appended to its payload segments.",
        "sleepyseal_core_store_segment_padding_bytes_total counter Zero bytes the store wrote after payload data to start the next commit on a block.",
        "sleepyseal_core_store_syncs_total counter The store's fsync and fdatasync calls.",
        "sleepyseal_core_store_compaction_bytes_total counter Bytes the store's compactions wrote.",
        "sleepyseal_core_verify_seconds histogram Time to verify one batch of requests.",
        "sleepyseal_core_verify_batch_requests histogram Requests verified together in one batch.",
        "sleepyseal_core_store_commit_seconds histogram Write and fsync of one group commit.",
        "sleepyseal_core_group_commit_requests histogram Requests handled in one group commit.",
        "sleepyseal_core_verify_queue_requests gauge Requests waiting for the verify stage.",
        "sleepyseal_core_core_queue_requests gauge Verified requests waiting for the core thread.",
        "sleepyseal_core_queue_wait_seconds histogram Arrival of a request to the core thread taking it (verify stage and queues), by request kind.",
        "sleepyseal_core_parked_reads gauge Long-poll reads held until entries commit.",
        "sleepyseal_core_mempool_transactions gauge Transactions in the mempool.",
        "sleepyseal_core_gap_entries gauge Committed entries of an install's gap not filled yet (PROTOCOL.md 8a.5).",
        "sleepyseal_core_store_bound_bytes gauge The sum of this core's configured storage bounds (PROTOCOL.md 8a.6).",
        "sleepyseal_core_connections gauge Connections open or completing their handshake.",
        "sleepyseal_core_refused_connections_total counter Connections refused, or closed to make room for a newcomer, by reason (stopping, per_address, per_prefix, connect_rate, full, handshake_timeout, evicted).",
        "sleepyseal_core_retries_sent_total counter Connection attempts answered with a QUIC retry to validate the source address.",
        "sleepyseal_core_rate_limited_streams_total counter Request streams that waited because their connection had spent its request rate.",
        "sleepyseal_core_headers_built_total counter Own headers built and signed.",
        "sleepyseal_core_proposed_payload_bytes_total counter Payload bytes proposed in own headers.",
        "sleepyseal_core_votes_cast_total counter Votes cast for other authors' headers.",
        "sleepyseal_core_certificates_inserted_total counter Certificates newly inserted into the DAG.",
        "sleepyseal_core_committed_payload_bytes_total counter Payload bytes committed since start.",
        "sleepyseal_core_leaders_committed_total counter Leaders committed since start.",
        "sleepyseal_core_own_headers_orphaned_total counter Own headers that fell below gc_round uncommitted.",
        "sleepyseal_core_requeued_transactions_total counter Transactions of orphaned own headers put back into the mempool.",
        "sleepyseal_core_checkpoints_signed_total counter Checkpoint states this core reached and signed (PROTOCOL.md 8a.1).",
        "sleepyseal_core_checkpoints_installed_total counter Certified checkpoints this core installed (PROTOCOL.md 8a.3).",
        "sleepyseal_core_gap_entries_filled_total counter Committed entries of an install's gap verified by fills (PROTOCOL.md 8a.5).",
        "sleepyseal_core_possibly_duplicated_transactions_total counter Transactions of undecided own headers proposed again after FILL_TIMEOUT.",
    ];

    #[test]
    fn exposition_parses_and_keeps_every_name_and_help() {
        let stats = ServerStats::default();
        stats.round.store(12, Ordering::Relaxed);
        stats.consensus_index.store(40, Ordering::Relaxed);
        stats.busy.fetch_add(5, Ordering::Relaxed);
        stats.core_counters.lock().unwrap().own_headers_orphaned = 2;
        stats.core_counters.lock().unwrap().transactions_requeued = 300;
        stats.core_counters.lock().unwrap().checkpoints_signed = 3;
        stats.verify_seconds.observe(0.003);
        stats.group_requests.observe(7.0);
        stats.payload_sent("fetch_payloads", 512);
        stats.queue_waited("get_state", std::time::Duration::from_micros(300));
        stats.refused_connection("evicted");
        stats.queue_waited("get_state", std::time::Duration::from_millis(20));
        let text = stats.exposition();
        assert_eq!(families(&text), FAMILIES, "{text}");
        // What the harness reads (bench: local.rs, chaos.rs; bench/tests/local.rs).
        for (name, value) in [
            ("sleepyseal_core_round", 12.0),
            ("sleepyseal_core_last_committed_round", 0.0),
            ("sleepyseal_core_committed_certificates_total", 40.0),
            ("sleepyseal_core_busy_replies_total", 5.0),
            ("sleepyseal_core_own_headers_orphaned_total", 2.0),
            ("sleepyseal_core_requeued_transactions_total", 300.0),
            ("sleepyseal_core_checkpoints_signed_total", 3.0),
            ("sleepyseal_core_verify_seconds_count", 1.0),
            ("sleepyseal_core_group_commit_requests_sum", 7.0),
            ("sleepyseal_core_payload_bytes_sent_total", 512.0),
            ("sleepyseal_core_payload_bytes_received_total", 0.0),
            (
                "sleepyseal_core_payload_bytes_by_request_total{direction=\"sent\",request=\"fetch_payloads\"}",
                512.0,
            ),
            ("sleepyseal_core_store_commit_seconds_count", 0.0),
            (
                "sleepyseal_core_queue_wait_seconds_count{request=\"get_state\"}",
                2.0,
            ),
            (
                "sleepyseal_core_queue_wait_seconds_bucket{request=\"get_state\",le=\"0.0005\"}",
                1.0,
            ),
        ] {
            assert_eq!(sample(&text, name), Some(value), "{name}");
        }
        let bucket = "sleepyseal_core_verify_seconds_bucket{le=\"0.005\"} 1\n";
        assert!(text.contains(bucket), "{text}");
    }
}
