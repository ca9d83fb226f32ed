//! What a run cost, read from `/proc` (Linux): the CPU time of the server under test (the
//! processes listening on its port) and of every PostgreSQL process on this machine, and
//! the server's peak resident memory.
//!
//! CPU time is `utime + stime` of `/proc/<pid>/stat`, in clock ticks of 1/100 s (Linux's
//! `USER_HZ`, fixed at 100 for this interface). A PostgreSQL backend that exits during a run
//! takes its time with it; Coffer keeps its connections open, so that is rare.

use serde::Serialize;
use std::collections::HashSet;

/// Linux's `USER_HZ`: ticks a second in `/proc/<pid>/stat`.
const TICKS_PER_SEC: u64 = 100;

/// CPU ticks of some processes at one moment.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    server: u64,
    postgres: u64,
    server_pids: Vec<u32>,
}

/// What a run cost, from two samples.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Cost {
    pub server_cpu_ms: u64,
    pub postgres_cpu_ms: u64,
    /// Server CPU per operation (a transfer applied, or a read), in microseconds.
    pub server_us_per_op: f64,
    pub postgres_us_per_op: f64,
    /// The server's peak resident set (`VmHWM`), in MiB.
    pub server_rss_peak_mib: f64,
    /// Processes measured: the server's pids and how many PostgreSQL processes.
    pub server_pids: Vec<u32>,
}

fn stat_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields are counted after the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Socket inodes listening on `port` (IPv4 and IPv6).
fn listening_inodes(port: u16) -> HashSet<String> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let listening = *state == "0A";
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if listening && local_port == Some(port) {
                inodes.insert((*inode).to_owned());
            }
        }
    }
    inodes
}

/// The processes with a socket listening on `port`.
pub fn listening_pids(port: u16) -> Vec<u32> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return Vec::new();
    }
    pids()
        .into_iter()
        .filter(|pid| {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                return false;
            };
            fds.filter_map(Result::ok).any(|fd| {
                std::fs::read_link(fd.path())
                    .ok()
                    .and_then(|target| target.to_str().map(str::to_owned))
                    .and_then(|target| {
                        target
                            .strip_prefix("socket:[")
                            .and_then(|t| t.strip_suffix(']'))
                            .map(str::to_owned)
                    })
                    .is_some_and(|inode| inodes.contains(&inode))
            })
        })
        .collect()
}

fn postgres_ticks() -> u64 {
    pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .filter_map(stat_ticks)
        .sum()
}

fn rss_peak_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

impl CpuSample {
    /// Now, for the server listening on `port` (`None` where `/proc` tells nothing).
    pub fn take(port: u16) -> Option<Self> {
        let server_pids = listening_pids(port);
        if server_pids.is_empty() {
            return None;
        }
        Some(Self {
            server: server_pids.iter().filter_map(|pid| stat_ticks(*pid)).sum(),
            postgres: postgres_ticks(),
            server_pids,
        })
    }

    /// The cost from `self` to `later`, over `operations` operations.
    pub fn cost_until(&self, later: &CpuSample, operations: u64) -> Cost {
        let ms = |ticks: u64| ticks * 1000 / TICKS_PER_SEC;
        let server = ms(later.server.saturating_sub(self.server));
        let postgres = ms(later.postgres.saturating_sub(self.postgres));
        let per_op = |cpu_ms: u64| {
            if operations == 0 {
                0.0
            } else {
                (cpu_ms as f64 * 1000.0 / operations as f64 * 10.0).round() / 10.0
            }
        };
        Cost {
            server_cpu_ms: server,
            postgres_cpu_ms: postgres,
            server_us_per_op: per_op(server),
            postgres_us_per_op: per_op(postgres),
            server_rss_peak_mib: later
                .server_pids
                .iter()
                .filter_map(|pid| rss_peak_mib(*pid))
                .sum::<f64>()
                .round(),
            server_pids: later.server_pids.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = std::process::id();
        assert!(stat_ticks(me).is_some());
        assert!(rss_peak_mib(me).is_some_and(|mib| mib > 0.0));
    }

    #[test]
    fn a_listening_socket_is_found_by_its_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(listening_pids(port), vec![std::process::id()]);
        let sample = CpuSample::take(port).expect("this process listens");
        let cost = sample.cost_until(&sample, 10);
        assert_eq!(cost.server_cpu_ms, 0);
    }
}
