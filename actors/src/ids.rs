//! Ids people can type and the cluster never sees twice: a name, then 8 hex digits from a
//! hash of a counter and the time (the runner's tasks, the process service's processes).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::TaskId;

static MADE: AtomicU64 = AtomicU64::new(0);

/// A hasher seeded with the process's random key, fed a counter and the time: what no
/// earlier call in any process is likely to have fed.
fn fresh_hasher() -> std::collections::hash_map::DefaultHasher {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(MADE.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h
}

/// A number no earlier call in any process is likely to have made, never 0: an agent's
/// life.
pub(crate) fn unique_number() -> u64 {
    use std::hash::Hasher;
    let mut h = fresh_hasher();
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// `<prefix><name>-<8 hex digits>`: the name made safe for a path (letters, digits and
/// `-`, at most 32), or `fallback` when nothing of it is left.
pub(crate) fn unique_id(prefix: &str, name: &str, fallback: &str) -> TaskId {
    use std::hash::Hasher;
    let h = fresh_hasher();
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
