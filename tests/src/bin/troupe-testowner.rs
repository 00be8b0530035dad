//! A process owner for the tests of re-adoption: it starts (or adopts) one task and waits
//! for it, printing what happens, so that a test can SIGKILL it mid-way.
//!
//! Usage: `troupe-testowner ROOT AGENT TASK [--adopt | -- ARGV...]`. Prints `started PID`
//! (or `adopted PID`, or `gone REASON`), then `exit REASON` when the task ends.

use std::io::Write;
use std::path::PathBuf;

use troupe_os::process::TaskContext;
use troupe_os::{Process, ProcessSpec};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 4,
        "usage: troupe-testowner ROOT AGENT TASK [--adopt | -- ARGV...]"
    );
    // The shim: $TROUPE_SHIM, or troupe-shim beside this binary.
    let executor = troupe_os::Executor::new();
    let ctx = TaskContext::new(&executor, &args[1], &args[2], PathBuf::from(&args[0]));
    let process = if args[3] == "--adopt" {
        match Process::adopt(ctx).await {
            Ok(p) => {
                println!("adopted {}", p.pid());
                p
            }
            Err(e) => {
                println!("gone {e}");
                return Ok(());
            }
        }
    } else {
        let spec = ProcessSpec::new(args[4..].iter().cloned());
        let p = Process::spawn(spec, ctx).await?;
        println!("started {}", p.pid());
        p
    };
    std::io::stdout().flush()?;
    let reason = process.wait().await;
    println!("exit {reason}");
    Ok(())
}
