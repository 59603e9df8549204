// SPDX-License-Identifier: MPL-2.0
//! What the benchmarks share: process CPU and memory, percentiles, and
//! `--name value` arguments.
#![allow(dead_code)]

/// CPU seconds this process has used, user and system.
pub fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// This process's CPU use so far, user and system apart, and its context
/// switches (voluntary and not).
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub user: f64,
    pub system: f64,
    pub switches: f64,
}

pub fn usage() -> Usage {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        user: s(u.ru_utime),
        system: s(u.ru_stime),
        switches: (u.ru_nvcsw + u.ru_nivcsw) as f64,
    }
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, o: Usage) -> Usage {
        Usage {
            user: self.user - o.user,
            system: self.system - o.system,
            switches: self.switches - o.switches,
        }
    }
}

/// A `/proc/self/status` figure in MB: `VmRSS` now, `VmHWM` at its peak.
pub fn status_mb(field: &str) -> f64 {
    process_mb(std::process::id(), field)
}

pub fn rss_mb() -> f64 {
    status_mb("VmRSS")
}

/// Median, p99 and max of samples in ms, with `unit` naming what was counted.
pub fn percentiles(mut v: Vec<f64>, unit: &str) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "median {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} {unit})",
        at(0.5),
        at(0.99),
        at(1.0),
        v.len()
    )
}

/// The value after `--name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// CPU seconds another process has used (`/proc/PID/stat`, user and system).
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    f.get(11)
        .zip(f.get(12))
        .map_or(0.0, |(u, s)| (u + s) / ticks)
}

/// Another process's `VmRSS` or `VmHWM`, in MB.
pub fn process_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}
