//! The process's allocator: mimalloc 2, and its options for the live
//! processes. Why (ARCHITECTURE "The allocator"): glibc's malloc and free
//! were 12-15 % of a simulator profile; mimalloc 2 runs capacity-10m about
//! 1.27 times as fast at a lower peak, where mimalloc 3 (the crate's
//! default) held 18 % more memory. The crate builds its C sources with the
//! `cc` crate, so the C compiler a fresh machine has is enough.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
/// KiB with neither (BENCHMARKS "The allocator"). The simulator keeps
/// the defaults: its working set churns, and purging at once made the
/// kernel zero the same huge pages again and again (`clear_page_erms`,
/// 4.5 % of a capacity-10m profile).
pub fn tune_for_a_long_running_process() {
    // SAFETY: each call sets one option to a value its documentation
    // names (purge delay 0: at once; allow_thp 0: off); no memory is
    // touched, and nothing else sets options concurrently at startup.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(option: libmimalloc_sys::mi_option_t) -> std::os::raw::c_long {
        // SAFETY: reads an option; touches no memory.
        unsafe { libmimalloc_sys::mi_option_get(option) }
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
    }
}
