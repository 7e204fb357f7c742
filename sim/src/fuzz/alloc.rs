//! A counting global allocator: the fuzz targets measure what one request makes a core allocate.
//!
//! A binary installs it with `#[global_allocator] static A: CountingAlloc = CountingAlloc;` (the
//! cargo-fuzz targets in `fuzz/` and the `fuzz_targets` test do). Counting is per thread and only while
//! armed by [`measure`], so the harness's own allocations and other test threads never count.

#![allow(unsafe_code)] // A `GlobalAlloc` is an unsafe trait; this one only forwards to `System`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Forwards to the system allocator and counts, per thread, while armed.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

thread_local! {
    // `const` initialisers of `Copy` types: no lazy init and no destructor, so touching these
    // from inside the allocator never allocates.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn on_alloc(size: usize) {
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let live = LIVE.get() + size as i64;
            LIVE.set(live);
            PEAK.set(PEAK.get().max(live));
            LARGEST.set(LARGEST.get().max(size));
        }
    });
}

fn on_dealloc(size: usize) {
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            // Freeing what existed before the measurement must not make room for more: the
            // live count never goes below zero.
            LIVE.set((LIVE.get() - size as i64).max(0));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counting
// only touches const-initialised thread locals, which neither allocate nor unwind.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(layout.size());
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_dealloc(layout.size());
        on_alloc(new_size);
        // SAFETY: as above; `System.realloc` gets the block's own layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// What a measured closure allocated on its thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Largest single allocation, in bytes.
    pub largest: usize,
    /// Peak of bytes allocated and not yet freed, counted from the start of the closure.
    pub peak: usize,
}

/// Runs `f` with counting armed on this thread. Not reentrant.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, AllocStats) {
    /// Disarms on the way out, unwinding included.
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            ARMED.set(false);
        }
    }
    LIVE.set(0);
    PEAK.set(0);
    LARGEST.set(0);
    ARMED.set(true);
    let disarm = Disarm;
    let out = f();
    drop(disarm);
    let stats = AllocStats {
        largest: LARGEST.get(),
        peak: PEAK.get().max(0) as usize,
    };
    (out, stats)
}

/// Whether [`CountingAlloc`] is this process's global allocator (without it every measurement
/// reads zero and the allocation checks would pass vacuously).
pub fn installed() -> bool {
    let (_, stats) = measure(|| std::hint::black_box(vec![0u8; 4096]));
    stats.largest >= 4096
}
