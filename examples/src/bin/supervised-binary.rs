//! A real binary under a supervisor: `python3 -m http.server` as a process actor, restarted
//! when it crashes.
//!
//! ```text
//!   supervisor  (one_for_one, at most 5 restarts in 30 s)
//!    └── web    process actor: python3 -m http.server PORT, in its cgroup and sandbox
//! ```
//!
//! Run: `cargo run -p troupe-examples --bin supervised-binary [-- PORT]` (as root for
//! cgroups; without root the process runs without them, with a warning).

use std::time::Duration;

use anyhow::Context;
use troupe_os::process::TaskContext;
use troupe_os::{ProcessMsg, ProcessSpec, process_child};
use troupe_runtime::supervisor::{ChildSpec, Strategy};
use troupe_runtime::{Addr, SupFlags, SupervisorRef, SupervisorSpec};

const CALL: Duration = Duration::from_secs(10);

fn main() -> anyhow::Result<()> {
    // This binary is also the shim that parents the task, and its launcher: before any
    // thread starts (a launcher forks, which is sound only with one thread).
    troupe_os::main_if_shim();
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let port: u16 = std::env::args().nth(1).map_or(Ok(8765), |p| p.parse())?;
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .context("this example runs python3's http.server, and python3 was not found")?;
    let sandboxes = std::env::temp_dir().join(format!("troupe-example-{}", std::process::id()));

    let web = ProcessSpec::new([
        python,
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .grace(Duration::from_secs(2));
    let flags = SupFlags::new(Strategy::OneForOne).intensity(5, Duration::from_secs(30));
    let sup = SupervisorRef::start(SupervisorSpec::new(flags).child(process_child(
        ChildSpec::worker("web"),
        web,
        TaskContext::new(&troupe_os::Executor::new(), "example", "web", &sandboxes),
    )))
    .await?;
    let result = demo(&sup, port).await;
    sup.stop().await;
    let _ = std::fs::remove_dir_all(&sandboxes);
    println!("supervisor stopped; the server and its cgroup are gone");
    result
}

async fn demo(sup: &SupervisorRef, port: u16) -> anyhow::Result<()> {
    let web = Addr::<ProcessMsg>::new("task/web");
    let pid = serving(&web, port).await?;
    println!("web serves http://127.0.0.1:{port}/ as pid {pid}");

    println!("killing pid {pid} with SIGKILL...");
    web.call(
        |reply| ProcessMsg::Signal {
            signal: "KILL".into(),
            reply,
        },
        CALL,
    )
    .await?
    .map_err(anyhow::Error::msg)?;
    let deadline = tokio::time::Instant::now() + CALL;
    let again = loop {
        if let Ok(p) = serving(&web, port).await {
            if p != pid {
                break p;
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "web was not restarted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let child = &sup.which_children().await?[0];
    println!(
        "restarted by its supervisor as pid {again} (restarts: {}, last exit: {})",
        child.restarts,
        child.last_exit.as_deref().unwrap_or("-")
    );
    get(port).await?;
    let tail = web
        .call(
            |reply| ProcessMsg::Tail {
                stream: troupe_os::actor::Stream::Stderr,
                lines: 3,
                reply,
            },
            CALL,
        )
        .await?;
    println!("its log says: {tail:?}");
    Ok(())
}

/// One HTTP request, so that the server has something to log.
async fn get(port: u16) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await?;
    anyhow::ensure!(answer.starts_with(b"HTTP/1.0 200"), "unexpected answer");
    // The server logs the request just after answering it; the log keeper looks every 50 ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// The pid of the web process, once it answers on its port.
async fn serving(web: &Addr<ProcessMsg>, port: u16) -> anyhow::Result<i32> {
    let deadline = tokio::time::Instant::now() + CALL;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            let info = web.call(|reply| ProcessMsg::Info { reply }, CALL).await?;
            return Ok(info.pid);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "web does not answer on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
