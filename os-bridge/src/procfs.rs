//! What `/proc` says of a process.

/// The start time of process `pid`, in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`). Together with the pid it names one process for good: a later
/// process that gets the same pid has a later start time.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = read_stat(pid)?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The command name of process `pid` (`/proc/<pid>/comm`: at most 15 bytes of it).
pub fn comm(pid: i32) -> Option<String> {
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(name.trim_end().to_string())
}

/// Whether process `pid` exists and is not a zombie.
pub fn is_running(pid: i32) -> bool {
    read_stat(pid)
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace()
                .next()
                .map(|state| state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// `/proc/<pid>/stat`, read in one go: a launch reads it three times, and reading it as a
/// file of unknown size (a `stat` and reads of 32, 32, 64, 128 and 256 bytes) took six
/// system calls where one does.
fn read_stat(pid: i32) -> Option<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut text = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    String::from_utf8(text).ok()
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
