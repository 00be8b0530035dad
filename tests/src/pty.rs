//! A pseudo-terminal for driving interactive commands (`troupe repl`) as a person would:
//! keys in, screen out.
//!
//! The command runs under `setsid --ctty`, so the terminal is its controlling terminal and
//! Ctrl-C typed into it reaches it as SIGINT, as in a real terminal. A thread copies
//! everything the command writes into a buffer that [`Pty::expect`] searches.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A command running on a pseudo-terminal.
pub struct Pty {
    writer: std::fs::File,
    child: Option<Child>,
    screen: Arc<Mutex<Vec<u8>>>,
    /// How much of the screen earlier `expect`s consumed.
    seen: usize,
}

impl Pty {
    /// Starts `program args...` on a new 40×120 terminal.
    pub fn spawn(
        program: &std::path::Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Pty> {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master: OwnedFd =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        rustix::termios::tcsetwinsize(
            &master,
            rustix::termios::Winsize {
                ws_row: 40,
                ws_col: 120,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )?;
        let name = ptsname(&master, Vec::new())?;
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str()?)?;
        let mut cmd = Command::new("setsid");
        cmd.arg("--ctty")
            .arg(program)
            .args(args)
            .envs(envs.iter().copied())
            .env("TERM", "xterm")
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn()?;
        let master = std::fs::File::from(master);
        let mut reader = master.try_clone()?;
        let screen = Arc::new(Mutex::new(Vec::new()));
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with an error (EIO) once every holder of the terminal's other side is gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Ok(Pty {
            writer: master,
            child: Some(child),
            screen,
            seen: 0,
        })
    }

    /// Types `keys` (`\r` is Enter, `\t` Tab, `\x03` Ctrl-C, `\x04` Ctrl-D, `\x1b[A` Up).
    pub fn send(&mut self, keys: &str) -> anyhow::Result<()> {
        self.writer.write_all(keys.as_bytes())?;
        self.writer.flush()?;
        Ok(())
    }

    /// Everything on the screen so far, escape sequences and all.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Waits until `needle` appears after what earlier calls consumed; returns the text up to
    /// and including it, and consumes it.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            let from = self.seen.min(screen.len());
            if let Some(at) = screen[from..].find(needle) {
                let end = from + at + needle.len();
                self.seen = end;
                return Ok(screen[from..end].to_string());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no {needle:?} on the screen within {timeout:?}; after the last match it shows:\n{}",
                &screen[from..]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the command to exit, within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        crate::wait_child(&mut self.child, timeout)
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
