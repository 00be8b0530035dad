//! Shared fixtures for troupe's integration tests.
//!
//! * [`cluster`]: a framework for tests that launches queued tasks and records statuses.
//! * [`actors`]: the actors the helper node `troupe-testnode` serves, and their messages,
//!   shared with the tests that talk to them.
//! * [`ChildNode`]: a node in another OS process, killed (and reaped) when dropped, so that a
//!   failing test leaves no process behind.
//! * [`remote`]: calls to those actors, and monitors that count their firings.
//! * [`CpuHog`]: processes that keep every core busy, for tests of a loaded machine.
//! * [`TaskLitter`]: removes what tasks of a test left (processes, cgroups, sandboxes).
//! * [`wait_until`]: waiting on a condition with a deadline instead of sleeping.
//! * [`net`]: the fault harness's network: hosts as network namespaces, links cut both
//!   ways or one way, latency and loss.

pub mod actors;
pub mod cluster;
pub mod net;
pub mod pty;
pub mod remote;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use troupe_runtime::{Cookie, Node, NodeConfig};

/// The cookie the tests use unless a test is about cookies.
pub const TEST_COOKIE: &str = "troupe-test-cookie";

/// A node running in a child OS process.
#[derive(Debug)]
pub struct ChildNode {
    /// The node's name.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Option<Child>,
    /// Kept open: the helper node exits when its standard input closes, so it cannot
    /// outlive a test process that was killed.
    _stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ChildNode {
    /// Starts the helper node binary `bin` (an integration test passes
    /// `env!("CARGO_BIN_EXE_troupe-testnode")`) as node `name` with the given cookie and extra
    /// arguments, and waits until it listens.
    pub fn start_testnode(
        bin: &str,
        name: &str,
        cookie: &str,
        extra: &[&str],
    ) -> anyhow::Result<ChildNode> {
        ChildNode::start_named(Command::new(bin), name, cookie, extra)
    }

    /// Appends `--name NAME --listen 127.0.0.1:0 --cookie COOKIE` and `extra` to a node
    /// command (`troupe node`, or the helper node), spawns it, and waits until it listens.
    pub fn start_named(
        mut cmd: Command,
        name: &str,
        cookie: &str,
        extra: &[&str],
    ) -> anyhow::Result<ChildNode> {
        cmd.args([
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--cookie",
            cookie,
        ])
        .args(extra);
        ChildNode::spawn(name, cmd)
    }

    /// Spawns a command that prints `... listening on HOST:PORT` once it listens, and waits
    /// for that line (10 s at most).
    pub fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<ChildNode> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut node = ChildNode {
            name: name.to_string(),
            addr: "0.0.0.0:0".parse()?,
            child: Some(child),
            _stdin: stdin,
            stdout: BufReader::new(stdout),
        };
        let line = node.read_line_containing("listening on", Duration::from_secs(10))?;
        let addr = line
            .rsplit(' ')
            .next()
            .ok_or_else(|| anyhow::anyhow!("no address in {line:?}"))?;
        node.addr = addr.trim().parse()?;
        Ok(node)
    }

    /// Reads standard output until a line contains `needle`, within `timeout`.
    pub fn read_line_containing(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        // Reading blocks; the deadline is checked between lines and the child is killed by
        // the caller's Drop if it never prints.
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "no line with {needle:?} within {timeout:?}"
            );
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line)?;
            anyhow::ensure!(
                n > 0,
                "{} closed its output before printing {needle:?}",
                self.name
            );
            if line.contains(needle) {
                return Ok(line.trim_end().to_string());
            }
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal to the child.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }

    /// Waits for the child to exit, within `timeout`; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        wait_child(&mut self.child, timeout)
    }
}

/// Waits for a child to exit, within `timeout`; reaps it (leaves `None`) and returns its
/// status.
pub fn wait_child(
    child: &mut Option<Child>,
    timeout: Duration,
) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    let running = child
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("already reaped"))?;
    loop {
        if let Some(status) = running.try_wait()? {
            *child = None;
            return Ok(status);
        }
        anyhow::ensure!(Instant::now() < deadline, "still running after {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port free now, for a process that must come back on the same address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A `troupe master` command (the binary at `troupe`) named `name`, with the test cookie,
/// listening on `listen`, offering every 100 ms; the caller adds its own flags.
pub fn master_command(troupe: &str, name: &str, listen: &str) -> Command {
    let mut cmd = Command::new(troupe);
    cmd.args(["master", "--name", name, "--cookie", TEST_COOKIE]);
    cmd.args(["--listen", listen, "--allocation-interval-ms", "100"]);
    cmd
}

/// Runs the `troupe` binary at `troupe` with `args` against the master at `addr` (with the
/// test cookie); returns its exit code, stdout and stderr.
pub fn troupe_at(troupe: &str, addr: &str, args: &[&str]) -> (i32, String, String) {
    troupe_with_input(troupe, addr, args, None)
}

/// [`troupe_at`] with `input` on its standard input (a script for `troupe repl`).
pub fn troupe_with_input(
    troupe: &str,
    addr: &str,
    args: &[&str],
    input: Option<&str>,
) -> (i32, String, String) {
    let mut child = Command::new(troupe)
        .args(args)
        .env("TROUPE_MASTER", addr)
        .env("TROUPE_COOKIE", TEST_COOKIE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("troupe runs");
    let stdin = child.stdin.take();
    if let (Some(mut stdin), Some(input)) = (stdin, input) {
        use std::io::Write;
        stdin
            .write_all(input.as_bytes())
            .expect("troupe reads its input");
    }
    let out = child.wait_with_output().expect("troupe runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// GETs `path` from the HTTP server at `addr` (HTTP/1.1, `Connection: close`); returns the
/// status code and the body.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `troupe dev` (the binary at `troupe`) as `name` on a free loopback port, with two
/// agents of 1 cpu and 512 MiB working under `dir`, and waits until it listens. Also returns
/// what its agents' tasks may leave, removed when dropped.
pub fn start_dev(
    troupe: &std::path::Path,
    name: &str,
    dir: &std::path::Path,
) -> anyhow::Result<(ChildNode, Vec<TaskLitter>)> {
    start_dev_with(troupe, name, dir, &[])
}

/// [`start_dev`] with more arguments for `troupe dev` (`--http 127.0.0.1:0`, say).
pub fn start_dev_with(
    troupe: &std::path::Path,
    name: &str,
    dir: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<(ChildNode, Vec<TaskLitter>)> {
    let mut cmd = Command::new(troupe);
    cmd.args([
        "dev",
        "--name",
        name,
        "--listen",
        "127.0.0.1:0",
        "--cookie",
        TEST_COOKIE,
    ]);
    cmd.args(["--cpus", "1", "--mem", "512", "--work-dir"]);
    cmd.arg(dir);
    cmd.args(extra);
    let node = ChildNode::spawn(name, cmd)?;
    let litter = (1..=2)
        .map(|i| {
            let agent = format!("{name}-a{i}");
            TaskLitter::new(dir.join(&agent).join("sandboxes"), &agent)
        })
        .collect();
    Ok((node, litter))
}

/// Starts this test process's own node, named `name`, on a free loopback port.
pub async fn start_local_node(name: &str, cookie: &str) -> Node {
    // TROUPE_TEST_LOG (a RUST_LOG filter) shows the test process's own node on standard
    // error, beside its helper nodes' (whose filter it is too); RUST_LOG would reach the
    // `troupe` commands that tests read the standard error of.
    if let Ok(filter) = std::env::var("TROUPE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let config = NodeConfig::new(
        name,
        "127.0.0.1:0".parse().expect("valid address"),
        Cookie::new(cookie).expect("valid cookie"),
    );
    Node::start(config).await.expect("the test node starts")
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Busy-loop processes, one per core, killed when dropped.
#[derive(Debug)]
pub struct CpuHog {
    children: Vec<Child>,
}

impl CpuHog {
    /// Starts `n` processes that spin until dropped.
    pub fn start(n: usize) -> anyhow::Result<CpuHog> {
        let mut hog = CpuHog {
            children: Vec::new(),
        };
        for _ in 0..n {
            hog.children.push(
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .stdin(Stdio::null())
                    .spawn()?,
            );
        }
        Ok(hog)
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A directory of a test under the temp directory, emptied when made and removed with all in
/// it when dropped: also when the test fails, which a removal at its end would not do.
#[derive(Debug)]
pub struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    /// `<temp>/troupe-<name>-<pid>`, empty.
    pub fn new(name: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("troupe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        ScratchDir(dir)
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for ScratchDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the tasks of one test may leave behind, removed when dropped, even if the test
/// failed half-way: their processes (found by their checkpoints and cgroups), their cgroups
/// (`troupe/<agent>`) and their sandbox root.
#[derive(Debug)]
pub struct TaskLitter {
    /// The sandbox root.
    pub root: std::path::PathBuf,
    /// The agent id the tasks' cgroups are under.
    pub agent: String,
    /// A whole work directory to remove as well.
    pub work: Option<std::path::PathBuf>,
}

impl TaskLitter {
    /// A fresh sandbox root under the temp directory, and an agent id.
    pub fn new(root: std::path::PathBuf, agent: &str) -> TaskLitter {
        let _ = std::fs::create_dir_all(&root);
        TaskLitter {
            root,
            agent: agent.to_string(),
            work: None,
        }
    }

    /// This litter, removing the whole work directory `work` as well.
    pub fn and_work_dir(mut self, work: std::path::PathBuf) -> TaskLitter {
        self.work = Some(work);
        self
    }
}

impl Drop for TaskLitter {
    fn drop(&mut self) {
        use rustix::process::{Pid, Signal, kill_process, kill_process_group};
        let kill = |pid: i32, group: bool| {
            if let Some(pid) = Pid::from_raw(pid) {
                let _ = if group {
                    kill_process_group(pid, Signal::KILL)
                } else {
                    kill_process(pid, Signal::KILL)
                };
            }
        };
        if let Ok(tasks) = std::fs::read_dir(&self.root) {
            for task in tasks.flatten() {
                if let Some(c) = troupe_os::Checkpoint::read(&task.path().join(".troupe")) {
                    if troupe_os::procfs::start_time(c.pid) == Some(c.start_time) {
                        kill(c.pid, true);
                    }
                }
            }
        }
        // Every hierarchy's `troupe/<agent>` (warm cgroups too: their agent drained its
        // pools when it stopped): what is left in it killed, then removed; then the
        // sandboxes, warm ones included.
        troupe_os::cgroup::remove_owner(&self.agent, Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&self.root);
        if let Some(work) = &self.work {
            let _ = std::fs::remove_dir_all(work);
        }
    }
}

/// Whether this test runs as root, for what needs it (`what`, said when skipping). Not
/// root: it fails when `TROUPE_REQUIRE_ROOT=1` (as CI sets), else it says why the test
/// skips and answers `false`.
pub fn require_root(what: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("TROUPE_REQUIRE_ROOT").as_deref() != Ok("1"),
        "TROUPE_REQUIRE_ROOT=1 but not running as root ({what} need it)"
    );
    eprintln!("skipped: {what} need root");
    false
}
