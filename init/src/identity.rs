//! Who this process runs as, read from `/proc/self/status` (no `unsafe` libc call).
//!
//! Used to explain failures (validate run as the proxy's UID) and to adapt to running
//! without root; it never changes identity.

/// The effective UID and GID, or `None` when `/proc` cannot tell.
pub fn effective_ids() -> Option<(u32, u32)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let effective = |key: &str| -> Option<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((effective("Uid:")?, effective("Gid:")?))
}

/// Whether the process runs as root (unknown counts as root: nothing is adapted then).
pub fn is_root() -> bool {
    effective_ids().is_none_or(|(uid, _)| uid == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_ids_are_readable() {
        assert!(effective_ids().is_some());
    }
}
