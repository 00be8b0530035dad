//! Task logs: standard output and error go straight to files in the sandbox (opened by the
//! shim, append-only), so a task keeps logging whether or not an owner runs. While an owner
//! runs, one [`LogStream`] per file:
//!
//! * rotates it by size: `stdout.log` → `stdout.log.1` → ... keeping `max_files` files in
//!   all. Rotation copies the live file's last `max_file_bytes` and truncates it in place
//!   (the task's descriptor stays valid); a burst larger than a file between two looks is
//!   cut to its tail, so disk use stays bounded by about `max_files × max_file_bytes`;
//! * feeds live tails: each subscriber gets every byte from its starting offset on, as
//!   chunks with their offsets. Offsets count bytes since the stream began, across
//!   rotations (the count is kept in the sandbox, so it survives a new owner).
//!
//! While no owner runs, the live file just grows; the next owner rotates it at once.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::spec::LogPolicy;

/// How often a stream looks at its file.
const POLL: Duration = Duration::from_millis(50);
/// The most bytes one chunk carries.
const CHUNK: usize = 64 * 1024;

/// A piece of a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// The offset of its first byte in the stream.
    pub offset: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
}

enum Request {
    Subscribe {
        from: u64,
        to: mpsc::UnboundedSender<LogChunk>,
    },
    Offset(oneshot::Sender<u64>),
}

/// A handle to one log file's keeper. Dropping every handle stops it after a last look.
#[derive(Debug, Clone)]
pub struct LogStream {
    path: PathBuf,
    max_files: u32,
    requests: mpsc::UnboundedSender<Request>,
}

impl LogStream {
    /// Starts keeping `path` by `policy`, until `done` resolves (the task ended); then it
    /// takes a last look and stops.
    pub fn start(
        path: PathBuf,
        policy: LogPolicy,
        done: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> LogStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let (kept, max_files) = (path.clone(), policy.max_files);
        // The keeper reads where the stream stands in its own task: a start (a restart's
        // too) does not wait for those reads.
        tokio::spawn(async move { Keeper::new(kept, policy).run(rx, done).await });
        LogStream {
            path,
            max_files,
            requests: tx,
        }
    }

    /// Every byte from `from` on (from the oldest byte still kept, if `from` is older),
    /// then live, until the task ends.
    pub fn subscribe(&self, from: u64) -> mpsc::UnboundedReceiver<LogChunk> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Err(refused) = self.requests.send(Request::Subscribe { from, to: tx }) {
            // The keeper is done (the task ended): the files are final, read them.
            if let Request::Subscribe { to, .. } = refused.0 {
                for chunk in read_kept(&self.path, self.max_files, from) {
                    let _ = to.send(chunk);
                }
            }
        }
        rx
    }

    /// The offset the next byte will have.
    pub async fn offset(&self) -> Option<u64> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(Request::Offset(tx)).ok()?;
        rx.await.ok()
    }

    /// The last `n` lines kept (rotated files included).
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        last_lines(&self.path, self.max_files, n)
    }

    /// The live file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The last `n` lines of a log and its rotated files.
pub fn last_lines(path: &Path, max_files: u32, n: usize) -> Vec<String> {
    let mut text = Vec::new();
    for i in (1..max_files).rev() {
        if let Ok(bytes) = std::fs::read(rotated(path, i)) {
            text.extend(bytes);
        }
    }
    if let Ok(bytes) = std::fs::read(path) {
        text.extend(bytes);
    }
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// Everything kept of a log (rotated files, oldest first, then the live file) from the
/// stream offset `from` on, in chunks, read without taking part in rotation: for readers
/// other than the process's own keeper (an ended task's log, a one-off read).
pub fn read_kept(path: &Path, max_files: u32, from: u64) -> Vec<LogChunk> {
    let base: u64 = std::fs::read_to_string(base_file(path))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let mut files: Vec<(u64, Vec<u8>)> = Vec::new();
    let rotated_files: Vec<Vec<u8>> = (1..max_files)
        .rev()
        .filter_map(|i| std::fs::read(rotated(path, i)).ok())
        .collect();
    let kept: u64 = rotated_files.iter().map(|b| b.len() as u64).sum();
    let mut offset = base.saturating_sub(kept);
    for bytes in rotated_files {
        let len = bytes.len() as u64;
        files.push((offset, bytes));
        offset += len;
    }
    files.push((base, std::fs::read(path).unwrap_or_default()));
    let mut out = Vec::new();
    for (start, bytes) in files {
        let end = start + bytes.len() as u64;
        if from >= end {
            continue;
        }
        let skip = from.saturating_sub(start) as usize;
        for (i, piece) in bytes[skip..].chunks(CHUNK).enumerate() {
            out.push(LogChunk {
                offset: start + skip as u64 + (i * CHUNK) as u64,
                bytes: piece.to_vec(),
            });
        }
    }
    out
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

fn base_file(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".base");
    let p = PathBuf::from(name);
    match (p.parent(), p.file_name()) {
        (Some(dir), Some(file)) => dir.join(".troupe").join(file),
        _ => p,
    }
}

struct Subscriber {
    next: u64,
    to: mpsc::UnboundedSender<LogChunk>,
}

struct Keeper {
    path: PathBuf,
    policy: LogPolicy,
    /// The stream offset of the live file's first byte.
    base: u64,
    /// How much of the live file the subscribers have been given.
    seen: u64,
    subscribers: Vec<Subscriber>,
}

impl Keeper {
    fn new(path: PathBuf, policy: LogPolicy) -> Keeper {
        let base = std::fs::read_to_string(base_file(&path))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let seen = std::fs::metadata(&path).map_or(0, |m| m.len());
        Keeper {
            path,
            policy,
            base,
            seen,
            subscribers: Vec::new(),
        }
    }

    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        done: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        tokio::pin!(done);
        let mut ended = false;
        loop {
            tokio::select! {
                request = requests.recv(), if !ended => match request {
                    Some(Request::Subscribe { from, to }) => self.subscribe(from, to),
                    Some(Request::Offset(reply)) => {
                        self.look();
                        let _ = reply.send(self.base + self.seen);
                    }
                    None => ended = true,
                },
                _ = &mut done, if !ended => ended = true,
                _ = tokio::time::sleep(POLL) => {}
            }
            self.look();
            if ended {
                // Subscribers that came while it ended still get what is kept.
                requests.close();
                while let Ok(request) = requests.try_recv() {
                    if let Request::Subscribe { from, to } = request {
                        self.subscribe(from, to);
                    }
                }
                return;
            }
        }
    }

    /// Hands a new subscriber what is kept from `from` on.
    fn subscribe(&mut self, from: u64, to: mpsc::UnboundedSender<LogChunk>) {
        let mut next = from.max(self.base.saturating_sub(self.kept_rotated_bytes()));
        if next < self.base {
            // Older bytes are in the rotated files, oldest first.
            let mut offset = self.base - self.kept_rotated_bytes();
            for i in (1..self.policy.max_files).rev() {
                let Ok(bytes) = std::fs::read(rotated(&self.path, i)) else {
                    continue;
                };
                let end = offset + bytes.len() as u64;
                if next < end {
                    let start = (next - offset) as usize;
                    let _ = to.send(LogChunk {
                        offset: next,
                        bytes: bytes[start..].to_vec(),
                    });
                    next = end;
                }
                offset = end;
            }
            next = next.max(self.base);
        }
        let live_end = self.base + self.seen;
        if next < live_end {
            let start = next - self.base;
            if let Some(bytes) = read_range(&self.path, start, self.seen) {
                let _ = to.send(LogChunk {
                    offset: next,
                    bytes,
                });
            }
            next = live_end;
        }
        self.subscribers.push(Subscriber { next, to });
    }

    fn kept_rotated_bytes(&self) -> u64 {
        (1..self.policy.max_files)
            .filter_map(|i| std::fs::metadata(rotated(&self.path, i)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Gives subscribers what is new, and rotates when the file is too big.
    fn look(&mut self) {
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size < self.seen {
            // Truncated by someone else: start over at its new end.
            self.base += self.seen;
            self.seen = 0;
        }
        self.subscribers.retain(|s| !s.to.is_closed());
        while self.seen < size {
            let before = self.seen;
            self.deliver_up_to(size.min(self.seen + CHUNK as u64));
            if self.seen == before {
                break;
            }
        }
        if size > self.policy.max_file_bytes {
            // Whatever came in since, subscribers get before the truncation; only bytes
            // written in the instant between this read and the truncation are lost.
            let size = std::fs::metadata(&self.path).map_or(size, |m| m.len());
            if size > self.seen {
                self.deliver_up_to(size);
            }
            self.rotate(size);
        }
    }

    fn deliver_up_to(&mut self, size: u64) {
        if let Some(bytes) = read_range(&self.path, self.seen, size) {
            let offset = self.base + self.seen;
            self.seen += bytes.len() as u64;
            for s in &mut self.subscribers {
                if s.next < offset + bytes.len() as u64 {
                    let skip = s.next.saturating_sub(offset) as usize;
                    let _ = s.to.send(LogChunk {
                        offset: offset + skip as u64,
                        bytes: bytes[skip..].to_vec(),
                    });
                    s.next = offset + bytes.len() as u64;
                }
            }
        }
    }

    fn rotate(&mut self, size: u64) {
        let keep = self.policy.max_files.max(1);
        if keep > 1 {
            for i in (1..keep - 1).rev() {
                let _ = std::fs::rename(rotated(&self.path, i), rotated(&self.path, i + 1));
            }
            let start = size.saturating_sub(self.policy.max_file_bytes);
            if let Some(tail) = read_range(&self.path, start, size) {
                let _ = std::fs::write(rotated(&self.path, 1), tail);
            }
        }
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&self.path) {
            let _ = file.set_len(0);
        }
        self.base += size;
        self.seen = 0;
        let _ = std::fs::write(base_file(&self.path), self.base.to_string());
    }
}

fn read_range(path: &Path, start: u64, end: u64) -> Option<Vec<u8>> {
    let mut file = File::open(path).ok()?;
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::with_capacity((end - start) as usize);
    file.take(end - start).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}
