//! The global allocator: mimalloc 2 (the `mimalloc` feature, on by default), with two of its
//! options set before the first allocation.
//!
//! Measured (BENCHMARKS.md, "Session 6: memory at 100,000 tags"): glibc's malloc fragments
//! where the gateway frees memory on other threads than the one that allocated it (bus
//! batches built by an adapter and freed by their last consumer, notifications built by the
//! OPC UA bridge and freed after the publish). mimalloc 2 with its defaults held less at
//! 100,000 tags with a client but more everywhere else, because
//! - on Linux (overcommit) it commits its arenas eagerly, and never purges memory freed in an
//!   eagerly committed arena: `arena_eager_commit = 0`;
//! - it gives freed memory back 10 ms after the last free at the earliest, longer for arenas,
//!   so a process that allocates and frees 4 MB batches ten times a second keeps them:
//!   `purge_delay = 0` returns it at once.
//!
//! Both are read when an arena is reserved or a purge is scheduled, so they are set from an
//! `.init_array` constructor, before the Rust runtime's first allocation; the environment
//! (`MIMALLOC_ARENA_EAGER_COMMIT`, `MIMALLOC_PURGE_DELAY`) no longer overrides them.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_e` of mimalloc 2's `mimalloc.h`.
const MI_OPTION_ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

extern "C" fn set_options() {
    // SAFETY: plain setters of mimalloc's option table, valid before and after its init.
    unsafe {
        mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
}

#[used]
#[link_section = ".init_array"]
static SET_OPTIONS: extern "C" fn() = set_options;

#[cfg(test)]
mod tests {
    extern "C" {
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    }

    #[test]
    fn the_options_are_set_before_main() {
        // SAFETY: a plain getter of mimalloc's option table.
        let (eager, delay) = unsafe {
            (
                mi_option_get(super::MI_OPTION_ARENA_EAGER_COMMIT),
                mi_option_get(super::MI_OPTION_PURGE_DELAY),
            )
        };
        assert_eq!((eager, delay), (0, 0));
    }
}
