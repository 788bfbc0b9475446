//! The gateway process's own memory and CPU, read from `/proc` (Linux, where the truck runs).

/// Resident memory in bytes, if the platform tells.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// User plus system CPU time in seconds, if the platform tells.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields are counted after its closing ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_second())
}

// Linux on x86_64 (and most aarch64 kernels) uses 4 KiB pages and 100 ticks a second for these files; reading
// them through libc would add a dependency for two constants.
fn page_size() -> u64 {
    4096
}

fn clock_ticks_per_second() -> f64 {
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn the_process_reads_its_own_memory_and_cpu() {
        let rss = resident_memory_bytes().expect("statm");
        assert!(rss > 1_000_000, "{rss}");
        let busy: u64 = (0..3_000_000u64).map(|i| i % 7).sum();
        assert!(busy > 0);
        assert!(cpu_seconds().expect("stat") >= 0.0);
    }
}
