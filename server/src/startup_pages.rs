//! After start-up, hand the executable's clean pages back to the kernel.
//!
//! The executable's code and read-only data are mapped from its file, and every page that
//! start-up touched stays counted in the process's RSS: building the companion address space
//! from generated code, reading the configuration, opening the stores. In steady state at
//! 10,000 tags, 4 MB of the 33 MB of the binary resident were still referenced (BENCHMARKS.md,
//! "Session 5"): the rest is start-up code. These pages are clean; the kernel drops them
//! whenever it needs memory and reads them back from the file on their next use.
//! `madvise(MADV_PAGEOUT)` (Linux 5.4) asks it to drop them now, so that the RSS shows what
//! the gateway holds; the code still in use comes back at its next call (a page fault each).
//! The kernel leaves the pages that another process maps too (a second gateway started from
//! the same file, as the integration tests do).

use std::io;
use std::path::Path;
use std::time::Duration;

/// Start-up is over this long after the gateway is ready (the first sessions and their
/// monitored items come in meanwhile).
pub const AFTER_READY: Duration = Duration::from_secs(5);

/// Advise the kernel to page out the executable's read-only mappings; the bytes advised.
/// `Ok(0)` on a kernel without `MADV_PAGEOUT`.
pub fn release_executable_pages() -> io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut advised = 0;
    for (start, end) in read_only_mappings_of(&maps, &exe) {
        // SAFETY: the range is a mapping of this process as listed by /proc/self/maps, and the
        // advice does not change its contents: the pages are clean copies of the file, read
        // back from it on their next use.
        let rc =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
        if rc != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EINVAL) {
                return Ok(0); // before Linux 5.4
            }
            return Err(error);
        }
        advised += end - start;
    }
    Ok(advised)
}

/// The address ranges of `exe` mapped without write permission, from a `/proc/PID/maps` text.
fn read_only_mappings_of(maps: &str, exe: &Path) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            // start-end perms offset dev inode path (the path may contain spaces)
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?.trim_start();
            if perms.contains('w') || Path::new(path) != exe {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (end > start).then_some((start, end))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_executables_read_only_mappings_are_chosen() {
        let maps = "\
5581a000-5581b000 r--p 00000000 08:01 42    /usr/bin/fabrique gateway
5581b000-5581d000 r-xp 00001000 08:01 42    /usr/bin/fabrique gateway
5581d000-5581e000 rw-p 00003000 08:01 42    /usr/bin/fabrique gateway
7f00a000-7f00b000 r-xp 00000000 08:01 7     /usr/lib/libc.so.6
7f00c000-7f00d000 rw-p 00000000 00:00 0 
";
        assert_eq!(
            read_only_mappings_of(maps, Path::new("/usr/bin/fabrique gateway")),
            [(0x5581a000, 0x5581b000), (0x5581b000, 0x5581d000)]
        );
    }

    #[test]
    fn the_test_binary_keeps_running_after_its_pages_are_released() {
        let advised = release_executable_pages().expect("madvise");
        // The code runs on: pages come back from the file at their next use.
        let total: u64 = (1..=1000u64).sum();
        assert_eq!(total, 500_500);
        // Either the kernel has no MADV_PAGEOUT, or the binary's text was advised.
        assert!(advised == 0 || advised > 4096);
    }
}
