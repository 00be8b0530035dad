//! Ids people can type and the cluster never sees twice: a name, then 8 hex digits from a
//! hash of a counter and the time (the runner's tasks, the process service's processes).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::TaskId;

static MADE: AtomicU64 = AtomicU64::new(0);

/// `<prefix><name>-<8 hex digits>`: the name made safe for a path (letters, digits and
/// `-`, at most 32), or `fallback` when nothing of it is left.
pub(crate) fn unique_id(prefix: &str, name: &str, fallback: &str) -> TaskId {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(MADE.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(32)
        .collect();
    let safe = if safe.trim_matches('-').is_empty() {
        fallback.to_string()
    } else {
        safe
    };
    TaskId(format!("{prefix}{safe}-{:08x}", h.finish() as u32))
}
