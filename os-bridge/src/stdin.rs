//! A task's standard input as a pipe its owner writes to (`ProcessSpec::stdin_pipe`): a
//! process actor's messages become the process's input, and the owner may close it.
//!
//! ```text
//!   owner (any life of it)       writes    .troupe/stdin        (a FIFO)  → the task's fd 0
//!   owner                        "close"   .troupe/stdin.close  (a FIFO)  → the shim
//!   troupe-shim                  holds a writer of .troupe/stdin until told to close
//! ```
//!
//! The pipe is a FIFO in the task's status directory, not a pipe held by the owner: the
//! owner (an agent) may restart while the task runs, and its input must outlive it, as its
//! logs do. A FIFO reads as ended once no writer holds it, so the shim, which lives as long
//! as the task, holds one writer for the whole run: the task sees the end of its input only
//! when the owner closes it ([`close`]: the shim drops its writer, and the FIFO's name is
//! removed so that nothing is written after), or when the run ends. Each [`send`] opens the
//! FIFO, writes, and closes it again.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FileType, Mode, OFlags};
use serde::{Deserialize, Serialize};

/// The FIFO that is the task's standard input, in its status directory.
pub const STDIN: &str = "stdin";

/// The FIFO the shim listens on for the close of the task's input.
pub const STDIN_CLOSE: &str = "stdin.close";

/// How long a send waits for room in the pipe (the task not reading) before it fails.
pub const SEND_WITHIN: Duration = Duration::from_secs(5);

/// Why input could not be sent to a task, or closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StdinRefused {
    /// The task was not started with its input as a pipe.
    #[error("its standard input is not a pipe (start it with stdin = \"pipe\")")]
    NotPiped,
    /// Its input was closed (or its run ended).
    #[error("its standard input is closed")]
    Closed,
    /// The task does not read: the pipe stayed full.
    #[error("its standard input is full (it does not read): {written} of {total} bytes sent")]
    Full {
        /// Bytes written before giving up.
        written: usize,
        /// Bytes asked to be written.
        total: usize,
    },
    /// Another failure of the OS.
    #[error("cannot write to its standard input: {cause}")]
    Failed {
        /// What the OS said.
        cause: String,
    },
}

/// The shim's side of a task's piped input: the FIFOs made, the read end for the task, and
/// the writer it holds until the owner closes the input or the run ends.
#[derive(Debug)]
pub struct Holder {
    close_path: PathBuf,
    listener: Option<std::thread::JoinHandle<()>>,
}

/// Makes the FIFOs in `status_dir` and opens them: the read end for the task's fd 0, and the
/// holder, whose thread waits for the owner's close.
pub fn open_for_task(status_dir: &Path) -> Result<(OwnedFd, Holder), String> {
    let (input, close_path) = (status_dir.join(STDIN), status_dir.join(STDIN_CLOSE));
    for path in [&input, &close_path] {
        let _ = std::fs::remove_file(path);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .map_err(|e| format!("cannot make the input FIFO {}: {e}", path.display()))?;
    }
    // Not blocking: there is no writer yet. The task then reads in blocking mode.
    let read = rustix::fs::open(
        &input,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open the input FIFO: {e}"))?;
    rustix::fs::fcntl_setfl(&read, OFlags::RDONLY)
        .map_err(|e| format!("cannot set the input FIFO blocking: {e}"))?;
    let writer = rustix::fs::open(&input, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| format!("cannot hold the input FIFO open: {e}"))?;
    let listen_on = close_path.clone();
    let listener = std::thread::Builder::new()
        .name("stdin-close".into())
        .spawn(move || {
            // Blocks until the owner (or the end of the run) opens it to write.
            if let Ok(mut told) = File::open(&listen_on) {
                let mut word = Vec::new();
                let _ = told.read_to_end(&mut word);
            }
            // Nothing is written after a close: the name goes first, then the writer.
            let _ = std::fs::remove_file(listen_on.with_file_name(STDIN));
            drop(writer);
        })
        .map_err(|e| format!("cannot start the input's listener: {e}"))?;
    Ok((
        read,
        Holder {
            close_path,
            listener: Some(listener),
        },
    ))
}

impl Drop for Holder {
    /// The run ended: the listener is told, and waited for (the shim may run another task
    /// next, and starts it alone).
    fn drop(&mut self) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let start = Instant::now();
        while !listener.is_finished() && start.elapsed() < Duration::from_secs(2) {
            // Succeeds once the listener waits in its open; until then, again.
            match rustix::fs::open(
                &self.close_path,
                OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => {
                    let _ = rustix::io::write(&fd, b"end");
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        if listener.is_finished() || start.elapsed() < Duration::from_secs(2) {
            let _ = listener.join();
        }
        let _ = std::fs::remove_file(&self.close_path);
    }
}

/// Whether the task of `status_dir` was started with its input as a pipe (its FIFO, or its
/// close FIFO once the input is closed, is there).
pub fn is_piped(status_dir: &Path) -> bool {
    status_dir.join(STDIN_CLOSE).exists() || status_dir.join(STDIN).exists()
}

/// Writes `bytes` to the input of the task of `status_dir`, waiting at most
/// [`SEND_WITHIN`] for room.
pub fn send(status_dir: &Path, bytes: &[u8]) -> Result<(), StdinRefused> {
    let input = status_dir.join(STDIN);
    let fd = match rustix::fs::open(
        &input,
        OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) if status_dir.join(STDIN_CLOSE).exists() => {
            return Err(StdinRefused::Closed);
        }
        Err(rustix::io::Errno::NOENT) => return Err(StdinRefused::NotPiped),
        // No reader: the task's run ended.
        Err(rustix::io::Errno::NXIO) => return Err(StdinRefused::Closed),
        Err(e) => {
            return Err(StdinRefused::Failed {
                cause: e.to_string(),
            });
        }
    };
    let start = Instant::now();
    let mut written = 0;
    while written < bytes.len() {
        match rustix::io::write(fd.as_fd(), &bytes[written..]) {
            Ok(n) => written += n,
            Err(rustix::io::Errno::AGAIN) if start.elapsed() < SEND_WITHIN => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(rustix::io::Errno::AGAIN) => {
                return Err(StdinRefused::Full {
                    written,
                    total: bytes.len(),
                });
            }
            Err(rustix::io::Errno::PIPE) => return Err(StdinRefused::Closed),
            Err(e) => {
                return Err(StdinRefused::Failed {
                    cause: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Closes the input of the task of `status_dir`: once it has read what was sent, it reads
/// the end. Closing a closed input is no error.
pub fn close(status_dir: &Path) -> Result<(), StdinRefused> {
    let close_path = status_dir.join(STDIN_CLOSE);
    if !close_path.exists() {
        return Err(StdinRefused::NotPiped);
    }
    if !status_dir.join(STDIN).exists() {
        return Ok(());
    }
    match rustix::fs::open(
        &close_path,
        OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => {
            let mut file = File::from(fd);
            let _ = file.write_all(b"close");
            drop(file);
            // Answered once the shim let go: the name is gone then.
            let start = Instant::now();
            while status_dir.join(STDIN).exists() && start.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        }
        // No one listens: the run ended, and its input with it.
        Err(rustix::io::Errno::NXIO) => Ok(()),
        Err(e) => Err(StdinRefused::Failed {
            cause: e.to_string(),
        }),
    }
}
