//! The process's allocator: mimalloc 2, and its options for the live
//! processes. Why (ARCHITECTURE "The allocator"): glibc's malloc and free
//! were 12-15 % of a simulator profile; mimalloc 2 runs capacity-10m about
//! 1.27 times as fast at a lower peak, where mimalloc 3 (the crate's
//! default) held 18 % more memory. The crate builds its C sources with the
//! `cc` crate, so the C compiler a fresh machine has is enough.
//!
//! The binary (and `examples/fleet_hours.rs`, so that its profiles weigh
//! allocation as the binary does) declares `#[global_allocator]` with
//! [`MiMalloc`] below; a library cannot, or every test binary of the
//! workspace that links it would change allocator too.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// mimalloc, asked through its plain entry points wherever they give the
/// alignment asked for. The `mimalloc` crate's own `MiMalloc` calls
/// `mi_malloc_aligned` for every allocation, whose extra checks (and, past
/// 1 KiB, a slower generic path) were 2.4 % of capacity-10m's
/// instructions in a steady simulated hour (callgrind, BENCHMARKS "Fewer
/// instructions, same decisions"). `mi_malloc` aligns every block to its size up to 16 bytes
/// (`mi_malloc_is_naturally_aligned` in mimalloc's `alloc-aligned.c`, the
/// test mimalloc's aligned path itself takes first); anything else goes
/// the aligned way as before.
pub struct MiMalloc;

/// `mi_malloc` aligns a block to at least `min(size, MI_MAX_ALIGN_SIZE)`.
const MI_MAX_ALIGN_SIZE: usize = 16;

#[inline]
fn plain(align: usize, size: usize) -> bool {
    align <= MI_MAX_ALIGN_SIZE && align <= size
}

/// A new block for `layout` from the plain entry point (`mi_malloc` or
/// `mi_zalloc`) where it aligns as asked, else from its aligned twin.
/// Inlined with constant functions, so each call is a direct one.
///
/// # Safety
/// As `GlobalAlloc::alloc`: `layout` has a non-zero size.
#[inline]
unsafe fn block(
    layout: Layout,
    plain_fn: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned_fn: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    if plain(layout.align(), layout.size()) {
        plain_fn(layout.size()).cast()
    } else {
        aligned_fn(layout.size(), layout.align()).cast()
    }
}

// SAFETY: every method hands the layout's size (and, where mimalloc's
// plain entry point would not honour it, its alignment) to the matching
// mimalloc function, which returns null on failure as `GlobalAlloc`
// expects; blocks from either entry point are freed by `mi_free`.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        block(
            layout,
            libmimalloc_sys::mi_malloc,
            libmimalloc_sys::mi_malloc_aligned,
        )
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        block(
            layout,
            libmimalloc_sys::mi_zalloc,
            libmimalloc_sys::mi_zalloc_aligned,
        )
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        libmimalloc_sys::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            libmimalloc_sys::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            libmimalloc_sys::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align())
                .cast()
        }
    }
}

/// Option numbers in mimalloc 2's `mimalloc.h` (`mi_option_e`), which
/// libmimalloc-sys names only in part; a test reads each one's default
/// back to show the numbering is this version's.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 37;

/// For the live processes (`node`, `up`, `chaos`, the console, ...):
/// freed memory goes back to the system at once instead of 10 ms later,
/// and no transparent huge pages, whose 2 MiB count in full however little
/// of them is used. One node hosting 100,000 channels: 1,053,428 KiB at
/// mimalloc's defaults, 1,030,816 KiB purging at once, about 1,010,000
/// KiB with neither (BENCHMARKS "The allocator"). The simulator does
/// the opposite ([`tune_for_the_simulator`]).
pub fn tune_for_a_long_running_process() {
    // SAFETY: each call sets one option to a value its documentation
    // names (purge delay 0: at once; allow_thp 0: off); no memory is
    // touched, and nothing else sets options concurrently at startup.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0);
    }
}

/// For the simulator (`reelfleet sim`, and `fleet_hours` beside it):
/// freed memory goes back to the system a second later instead of 10 ms
/// later. Its working set churns -- events, messages and commits freed
/// and allocated again every few milliseconds -- and at the default the
/// kernel zeroed the same transparent huge pages again and again: 86,506
/// page faults in a capacity-10m day against 853, `clear_page_erms` 9.8 %
/// of a profile of hours 0..4, and the day about 5 % slower (BENCHMARKS,
/// "The simulator's purge delay"). Huge pages stay allowed: without them
/// the day ran 2-11 % slower side by side (TLB misses), though its peak
/// was 3 % lower.
pub fn tune_for_the_simulator() {
    // SAFETY: sets one option to a value its documentation allows (a
    // delay in milliseconds); no memory is touched, and nothing else sets
    // options concurrently at startup.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, SIMULATOR_PURGE_DELAY_MS);
    }
}

/// See [`tune_for_the_simulator`].
const SIMULATOR_PURGE_DELAY_MS: std::os::raw::c_long = 1_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn get(option: libmimalloc_sys::mi_option_t) -> std::os::raw::c_long {
        // SAFETY: reads an option; touches no memory.
        unsafe { libmimalloc_sys::mi_option_get(option) }
    }

    /// Every block `MiMalloc` hands out has the layout's alignment, by the
    /// plain entry points (alignment up to 16 and no more than the size)
    /// and by the aligned ones alike: fresh, zeroed, grown and shrunk.
    #[test]
    fn blocks_are_aligned_as_asked() {
        let a = MiMalloc;
        let layout =
            |size: usize, align: usize| Layout::from_size_align(size, align).expect("layout");
        let aligned = |p: *mut u8, align: usize| !p.is_null() && (p as usize).is_multiple_of(align);
        // A block of `from` bytes filled with 0xA5, moved to `to` bytes.
        let resized = |p: *mut u8, from: usize, to: usize, align: usize| {
            // SAFETY: `p` is a live block of `from` bytes at `align`, made
            // by `a`; the new block is read within the bytes it kept.
            unsafe {
                let q = a.realloc(p, layout(from, align), to);
                assert!(aligned(q, align), "realloc {from} -> {to}, align {align}");
                let kept = from.min(to);
                assert!(
                    (0..kept).all(|i| *q.add(i) == 0xA5),
                    "realloc {from} -> {to} keeps the bytes"
                );
                q
            }
        };
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in (1..=300).chain([1023, 1024, 1025, 4096, 70_000]) {
                let (small, large) = (size / 2 + 1, size * 3);
                // SAFETY: non-zero sizes; each block is used within its
                // size and freed once, with the layout it has then.
                unsafe {
                    let z = a.alloc_zeroed(layout(size, align));
                    assert!(
                        aligned(z, align),
                        "alloc_zeroed {size} bytes, align {align}"
                    );
                    assert!((0..size).all(|i| *z.add(i) == 0), "zeroed, {size} bytes");
                    a.dealloc(z, layout(size, align));
                    let p = a.alloc(layout(size, align));
                    assert!(aligned(p, align), "alloc {size} bytes, align {align}");
                    p.write_bytes(0xA5, size);
                    let grown = resized(p, size, large, align);
                    let shrunk = resized(grown, large, small, align);
                    a.dealloc(shrunk, layout(small, align));
                }
            }
        }
    }

    /// The numbers above are this mimalloc's: each option, and two of its
    /// neighbours (`os_tag`, `max_errors`), reads the default its
    /// `options.c` gives it. A version that renumbered them fails here.
    #[test]
    fn the_option_numbers_are_mimalloc_2s() {
        if std::env::vars().any(|(k, _)| k.starts_with("MIMALLOC_")) {
            eprintln!("skipped: MIMALLOC_ options set in the environment");
            return;
        }
        assert_eq!(get(MI_OPTION_PURGE_DELAY), 10, "purge_delay");
        assert_eq!(get(18), 100, "os_tag");
        assert_eq!(get(19), 32, "max_errors");
        assert_eq!(get(MI_OPTION_ALLOW_THP), 1, "allow_thp");
        assert_eq!(get(MI_OPTION_ALLOW_THP - 1), 10_000, "generic_collect");
        // Then each process kind's settings read back as set. (This test
        // alone reads options, so setting them here races nothing.)
        tune_for_the_simulator();
        assert_eq!(
            get(MI_OPTION_PURGE_DELAY),
            1_000,
            "the simulator's purge delay"
        );
        assert_eq!(
            get(MI_OPTION_ALLOW_THP),
            1,
            "the simulator keeps huge pages"
        );
        tune_for_a_long_running_process();
        assert_eq!(
            get(MI_OPTION_PURGE_DELAY),
            0,
            "a live process purges at once"
        );
        assert_eq!(
            get(MI_OPTION_ALLOW_THP),
            0,
            "a live process takes no huge pages"
        );
    }
}
