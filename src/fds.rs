//! The file-descriptor budget: every connection the configuration allows, RocksDB's open
//! files and the links' sessions must fit under the process's limit, or the descriptor that
//! runs out is whichever asks last — a WAL file of RocksDB, an upstream reconnect — and money
//! paths break instead of one more terminal being refused. At start the soft limit is raised
//! to the hard one; a configuration that still does not fit is refused with the figures.

use crate::config::Config;

/// RocksDB keeps at most this many table files open (see `store::open_with`).
pub const ROCKSDB_OPEN_FILES: u64 = 512;

/// Descriptors beyond the counted ones: WAL and log files, the metrics endpoint's
/// connections, std streams, the runtime's own.
const SPARE: u64 = 256;

/// What the configuration may hold open at once.
pub fn needed(config: &Config) -> u64 {
    let listeners: u64 = config
        .listeners
        .iter()
        .map(|l| l.max_connections as u64)
        .sum();
    let admin = config
        .admin
        .as_ref()
        .map_or(0, |a| a.max_connections as u64);
    let sessions: u64 = config.links.iter().map(|l| l.sessions.max(1) as u64).sum();
    listeners + admin + sessions + ROCKSDB_OPEN_FILES + SPARE
}

/// Raise the soft limit to the hard one and check the configuration fits under it.
pub fn ensure(config: &Config) -> Result<(), String> {
    let need = needed(config);
    let limit = raise_soft_limit()?;
    if need > limit {
        return Err(format!(
            "the configuration may need {need} file descriptors (listeners' and the admin API's \
             max_connections, link sessions, {ROCKSDB_OPEN_FILES} for RocksDB, {SPARE} spare) \
             but the process may open {limit}: lower max_connections or raise the limit \
             (LimitNOFILE in the systemd unit, ulimit -n)"
        ));
    }
    Ok(())
}

/// The soft limit after raising it as far as the hard limit allows.
fn raise_soft_limit() -> Result<u64, String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!(
            "cannot read the file descriptor limit: {}",
            std::io::Error::last_os_error()
        ));
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur)
}
