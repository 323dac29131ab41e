//! What a process holds, read from `/proc`: resident memory, threads, and its descriptors split
//! into database connections (remote port 3306, bounded by the pools), other sockets and the
//! rest, so that a pool that grew to its bound is not mistaken for a leak.

use std::collections::HashSet;

use anyhow::Context;

/// MariaDB's port, as `/proc/net/tcp` spells it (hex).
const MARIADB_PORT_HEX: &str = "0CEA";

/// One look at a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// `VmRSS`, in KiB.
    pub rss_kib: u64,
    pub threads: u64,
    /// Every entry of `/proc/PID/fd`.
    pub fds: u64,
    /// Sockets connected to port 3306: the host's session pool and the platform's store.
    pub db_sockets: u64,
    /// Other sockets: the listener, clients, the sockets of running guests.
    pub other_sockets: u64,
}

impl Footprint {
    /// Descriptors that are not database connections.
    pub fn non_db_fds(&self) -> u64 {
        self.fds - self.db_sockets
    }

    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

/// Reads `pid`'s footprint now.
pub fn read(pid: u32) -> anyhow::Result<Footprint> {
    let status_path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&status_path)
        .with_context(|| format!("cannot read {status_path}"))?;
    let rss_kib = status_field(&status, "VmRSS:").context("no VmRSS in /proc/PID/status")?;
    let threads = status_field(&status, "Threads:").context("no Threads in /proc/PID/status")?;

    let fd_dir = format!("/proc/{pid}/fd");
    let mut fds = 0;
    let mut sockets = Vec::new();
    for entry in std::fs::read_dir(&fd_dir).with_context(|| format!("cannot list {fd_dir}"))? {
        let Ok(entry) = entry else { continue };
        fds += 1;
        // A descriptor closed between the listing and the link read is simply not counted.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
        {
            sockets.push(inode.to_string());
        }
    }
    let mut db_inodes = HashSet::new();
    for table in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        // tcp6 is absent on a kernel without IPv6.
        if let Ok(text) = std::fs::read_to_string(&path) {
            db_inodes.extend(parse_inodes_to_port(&text, MARIADB_PORT_HEX));
        }
    }
    let db_sockets = sockets.iter().filter(|s| db_inodes.contains(*s)).count() as u64;
    Ok(Footprint {
        rss_kib,
        threads,
        fds,
        db_sockets,
        other_sockets: sockets.len() as u64 - db_sockets,
    })
}

/// The number after `name` in a `/proc/PID/status` text (`VmRSS:   123456 kB`).
fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The inodes of the sockets in a `/proc/net/tcp` table whose remote port is `port_hex`.
fn parse_inodes_to_port(table: &str, port_hex: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let remote = fields.get(2)?;
            let inode = fields.get(9)?;
            (remote.rsplit(':').next()? == port_hex).then(|| inode.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_fields() {
        let status = "Name:\tdispatcher\nVmRSS:\t  123456 kB\nThreads:\t17\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(123_456));
        assert_eq!(status_field(status, "Threads:"), Some(17));
        assert_eq!(status_field(status, "VmSwap:"), None);
    }

    #[test]
    fn finds_the_sockets_to_mariadb() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:A1B2 0100007F:0CEA 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000\n\
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000\n\
   2: 0100007F:0CEA 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000\n";
        assert_eq!(parse_inodes_to_port(table, MARIADB_PORT_HEX), ["4242"]);
    }

    #[test]
    fn reads_this_process() {
        let me = read(std::process::id()).unwrap();
        assert!(me.rss_kib > 0 && me.threads >= 1 && me.fds >= 3, "{me:?}");
    }
}
