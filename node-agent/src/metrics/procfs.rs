//! Usage read from /proc, for what has no runtime to ask: the processes of a host-mode
//! container (its process group), and the node itself. The parsers are pure.

use crate::runtime::Usage;

/// (process group, CPU ticks used, resident pages) from one /proc/<pid>/stat line. The
/// command may hold spaces and parentheses, so fields are counted after its last ')'.
pub fn parse_stat(line: &str) -> Option<(i32, u64, u64)> {
    let rest = &line[line.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state(0) ppid(1) pgrp(2) … utime(11) stime(12) … rss(21).
    let pgrp = f.get(2)?.parse().ok()?;
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let rss = f.get(21)?.parse::<i64>().ok()?.max(0) as u64;
    Some((pgrp, ticks, rss))
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant of the system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

fn page_size() -> u64 {
    // SAFETY: as above.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// What the processes of group `pgid` use now; None when none is left.
pub fn group_usage(pgid: i32) -> Option<Usage> {
    let (hz, page) = (clock_ticks(), page_size());
    let mut found = false;
    let mut u = Usage::default();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(line) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        let Some((pgrp, ticks, rss)) = parse_stat(&line) else { continue };
        if pgrp == pgid {
            found = true;
            u.cpu_ns += ticks * 1_000_000_000 / hz;
            u.memory_bytes += rss * page;
        }
    }
    found.then_some(u)
}

/// CPU time the node has spent busy (every state but idle and iowait), in nanoseconds,
/// from /proc/stat's first line.
pub fn parse_cpu_busy_ns(stat: &str, hz: u64) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let busy: u64 = v.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).take(8).map(|(_, x)| *x).sum();
    Some(busy * 1_000_000_000 / hz.max(1))
}

/// The node's working set: MemTotal - MemAvailable, in bytes, from /proc/meminfo.
pub fn parse_memory_used(meminfo: &str) -> Option<u64> {
    let kb = |key: &str| meminfo.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).and_then(|x| x.parse::<u64>().ok());
    Some(kb("MemTotal:")?.saturating_sub(kb("MemAvailable:")?) * 1024)
}

/// The node as a whole now.
pub fn node_usage() -> Option<Usage> {
    let cpu_ns = parse_cpu_busy_ns(&std::fs::read_to_string("/proc/stat").ok()?, clock_ticks())?;
    let memory_bytes = parse_memory_used(&std::fs::read_to_string("/proc/meminfo").ok()?)?;
    Some(Usage { cpu_ns, memory_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command() {
        let line = "4242 (sh -c (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 12345 2000000 300 18446744073709551615";
        assert_eq!(parse_stat(line), Some((4242, 10, 300)));
    }

    #[test]
    fn node_figures_from_proc() {
        let stat = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        // user+nice+system+irq+softirq+steal = 161 ticks at 100 Hz.
        assert_eq!(parse_cpu_busy_ns(stat, 100), Some(1_610_000_000));
        let mem = "MemTotal:       16000000 kB\nMemFree:  1000 kB\nMemAvailable:   12000000 kB\n";
        assert_eq!(parse_memory_used(mem), Some(4_000_000 * 1024));
    }

    #[test]
    fn this_process_group_is_found() {
        // SAFETY: reading our own process group.
        let pgid = unsafe { libc::getpgrp() };
        let u = group_usage(pgid).expect("our own group");
        assert!(u.memory_bytes > 0);
    }
}
