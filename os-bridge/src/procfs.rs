//! What `/proc` says of a process.

/// The start time of process `pid`, in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`). Together with the pid it names one process for good: a later
/// process that gets the same pid has a later start time.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid` exists and is not a zombie.
pub fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace()
                .next()
                .map(|state| state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_start_time_is_stable() {
        let me = std::process::id() as i32;
        let t = start_time(me).expect("readable");
        assert_eq!(start_time(me), Some(t));
        assert!(is_running(me));
        assert_eq!(start_time(i32::MAX), None);
    }
}
