//! Hard limits on everything a peer can send. A decoder checks each length against these before it
//! allocates, so no input can make a core allocate more than the request it sent.

/// Largest encoded request or response a core accepts or produces, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Largest block payload, in bytes (the `--batch-size` can be at most this).
pub const MAX_PAYLOAD_BYTES: usize = 8 << 20;
/// Largest single transaction, in bytes.
pub const MAX_TRANSACTION_BYTES: usize = 64 << 10;
/// Most transactions in one `Submit`.
pub const MAX_TRANSACTIONS_PER_SUBMIT: usize = 16_384;
/// Most certificates in one request or response.
pub const MAX_CERTS_PER_REQUEST: usize = 4_096;
/// Most payloads carried in one request or response.
pub const MAX_PAYLOADS_PER_REQUEST: usize = 4_096;
/// Most signed headers in one `HeaderBundle`.
pub const MAX_HEADERS_PER_REQUEST: usize = 1_024;
/// Most validators in a committee (bounds bitmaps, parent lists and per-author vectors).
pub const MAX_COMMITTEE_SIZE: usize = 1_024;
/// Most checkpoint states in a `GetCheckpoint` reply (a core keeps its latest few).
pub const MAX_CHECKPOINTS_PER_REPLY: usize = 16;
/// Longest genesis nonce of a committee file, in bytes.
pub const MAX_GENESIS_NONCE_BYTES: usize = 64;
/// Largest value of a protocol constant (GC_DEPTH, CHECKPOINT_INTERVAL), in rounds.
pub const MAX_PROTOCOL_CONSTANT: u64 = 1 << 32;
/// Most digests listed in one reply (missing parents, missing payloads).
pub const MAX_DIGESTS_PER_MESSAGE: usize = 8_192;
/// Most committed entries returned by one `ReadCommitted`.
pub const MAX_COMMITTED_PER_READ: usize = 4_096;
