//! `sleepyseal_sim::fuzz::core_handle` under libFuzzer, with the counting allocator.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sleepyseal_sim::fuzz::{self, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fuzz_target!(|data: &[u8]| {
    assert!(fuzz::installed());
    fuzz::core_handle(data);
});
