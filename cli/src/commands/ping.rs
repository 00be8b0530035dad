//! `troupe ping HOST:PORT`: connect to a node, call its ping server, report the round trip.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use troupe_runtime::{Addr, AddrError, ConnectError, Node, PingMsg, ping_path};

use super::{CookieArgs, Failure};
use crate::exit;

/// Arguments of `troupe ping`.
#[derive(Debug, Args)]
pub(crate) struct PingArgs {
    /// The node's address.
    #[arg(value_name = "HOST:PORT", value_parser = super::values::host_port)]
    addr: SocketAddr,
    /// How long to wait for the connection and the answer, in milliseconds.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    timeout: u64,
    #[command(flatten)]
    cookie: CookieArgs,
}

pub(crate) async fn run(args: PingArgs) -> Result<(), Failure> {
    let timeout = Duration::from_millis(args.timeout);
    let (node, owned) = super::client::command_node(&args.cookie, args.addr, Some(timeout)).await?;
    let result = ping(&node, args.addr, timeout).await;
    if owned {
        node.stop().await;
    }
    let (name, elapsed) = result?;
    println!(
        "pong from {name} in {:.1} ms",
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(())
}

async fn ping(
    node: &Node,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(String, Duration), Failure> {
    let peer = node.connect(addr).await.map_err(|e| match e {
        ConnectError::CookieRefused { .. } => Failure::new(exit::COOKIE_REFUSED, e.to_string()),
        ConnectError::Timeout { .. } => Failure::new(exit::TIMEOUT, e.to_string()),
        ConnectError::Unreachable { .. } | ConnectError::Handshake { .. } => {
            Failure::new(exit::UNREACHABLE, e.to_string())
        }
        other => Failure::from(other),
    })?;
    let server = Addr::<PingMsg>::on(peer.clone(), ping_path(&peer));
    let started = Instant::now();
    let pong = server
        .call(|reply| PingMsg::Ping { reply }, timeout)
        .await
        .map_err(|e| match e {
            AddrError::Timeout { .. } => Failure::new(exit::TIMEOUT, e.to_string()),
            AddrError::CookieRefused { .. } => Failure::new(exit::COOKIE_REFUSED, e.to_string()),
            AddrError::NodeUnreachable { .. } => Failure::new(exit::UNREACHABLE, e.to_string()),
            other => Failure::from(other),
        })?;
    Ok((pong.node, started.elapsed()))
}
