//! The memory of OPC UA logins: checking many passwords allocates one Argon2 work area, not
//! one per login (see server/src/opcua/password.rs). Per login, glibc kept each freed 19 MiB
//! area resident in the checking thread's arena: 300 OPC UA sessions with a user name took
//! the release gateway from 59 to 403 MB.
//!
//! Its own test binary because it counts every large allocation of the process through a
//! global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use fabrique_gateway::opcua::security::{hash_password, verify_password};

/// Allocations from this size on are counted (an Argon2 work area is 19 MiB by default).
const LARGE: usize = 1 << 20;

static LARGE_BYTES: AtomicUsize = AtomicUsize::new(0);

struct CountingLarge;

// SAFETY: every call is passed on unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingLarge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

fn count(size: usize) {
    if size >= LARGE {
        LARGE_BYTES.fetch_add(size, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: CountingLarge = CountingLarge;

#[test]
fn many_logins_on_many_threads_allocate_one_work_area() {
    // `hash-password`'s parameters, which the users' hashes have: m = 19456 KiB.
    let hash = hash_password("s3cret").unwrap();
    let area = 19456 * 1024;
    let before = LARGE_BYTES.load(Ordering::Relaxed);
    std::thread::scope(|s| {
        for thread in 0..4 {
            let hash = &hash;
            s.spawn(move || {
                for login in 0..3 {
                    // Right and wrong passwords cost the same.
                    let right = (thread + login) % 2 == 0;
                    let password = if right { "s3cret" } else { "wrong" };
                    assert_eq!(verify_password(hash, password), right);
                }
            });
        }
    });
    let allocated = LARGE_BYTES.load(Ordering::Relaxed) - before;
    // 12 checks: at most the one area (allocated at the first check), not 12 × 19 MiB.
    assert!(
        allocated <= area,
        "12 password checks allocated {} MiB in large blocks (one work area: {} MiB)",
        allocated >> 20,
        area >> 20
    );
}
