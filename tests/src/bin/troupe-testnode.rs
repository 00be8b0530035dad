//! The helper node of the integration tests: a troupe node that serves `echo` and `control`
//! (see `troupe_tests::actors`). It exits when its standard input closes, so it never
//! outlives the test that started it.
//!
//! Usage: `troupe-testnode --name N --listen HOST:PORT --cookie C [--connect HOST:PORT]`.
//! With `--connect`, it connects to that node after starting and prints
//! `connect: ok NAME` or `connect: error KIND: TEXT`.

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use ractor::Actor;
use troupe_runtime::supervisor::{Args, Strategy};
use troupe_runtime::{
    Child, ChildSpec, ConnectError, Cookie, Node, NodeConfig, StartCtx, StartOutcome, SupFlags,
    SupervisorRef, SupervisorSpec, ractor,
};
use troupe_tests::actors::{Control, Echo, Victim};

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("TROUPE_TEST_LOG")
                .map(tracing_subscriber::EnvFilter::new)
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| "warn,ractor_cluster=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let name = arg(&args, "--name").ok_or_else(|| anyhow::anyhow!("--name is required"))?;
    let listen: SocketAddr = arg(&args, "--listen")
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()?;
    // Before the "listening" line, so that an early SIGTERM stops the node cleanly.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let cookie =
        Cookie::new(arg(&args, "--cookie").unwrap_or_else(|| "troupe-test-cookie".into()))?;
    let mut config = NodeConfig::new(name.clone(), listen, cookie);
    // As a troupe without message channels: everything through the session.
    if args.iter().any(|a| a == "--no-message-channel") {
        config.channel = troupe_runtime::ChannelConfig::Off;
    }
    let node = Node::start(config).await?;
    let (echo, _) = Actor::spawn(None, Echo, ()).await?;
    troupe_runtime::register("echo", &echo)?;
    let (control, _) = Actor::spawn(None, Control, ()).await?;
    troupe_runtime::register("control", &control)?;
    // Victims can be spawned here by kind, as supervisors on other nodes do.
    troupe_runtime::spawn::register_kind("victim", |_args| async {
        Actor::spawn(None, Victim::logging_to("spawned", Default::default()), ())
            .await
            .map(|(actor, _)| actor.get_cell())
            .map_err(|e| e.to_string())
    });
    // A small supervision tree, for the inspector's tests: two victims under one_for_one,
    // reachable at demo/w1 and demo/w2.
    troupe_runtime::spawn::register_kind("demo-supervisor", |_args| async {
        let victim = |id: &'static str| {
            Child::new(
                ChildSpec::worker(id).start("victim", Args::none()),
                move |ctx: StartCtx| async move {
                    let path = format!("demo/{id}");
                    let outcome = ctx
                        .spawn(Victim::logging_to(&path, Default::default()), ())
                        .await;
                    if let StartOutcome::Started(cell) = &outcome {
                        let _ = troupe_runtime::register_cell(&path, cell);
                    }
                    outcome
                },
            )
        };
        let flags = SupFlags::new(Strategy::OneForOne).intensity(5, Duration::from_secs(10));
        let spec = SupervisorSpec::new(flags)
            .child(victim("w1"))
            .child(victim("w2"));
        SupervisorRef::start(spec)
            .await
            .map(|sup| sup.cell())
            .map_err(|e| e.to_string())
    });
    // Process actors, for the tests of processes anywhere in the cluster. Arguments: the
    // spec, the task id and the sandbox root.
    let agent = format!("testnode-{name}");
    // One launch machinery for every process this node spawns, as an agent has.
    let executor = troupe_os::Executor::new();
    troupe_runtime::spawn::register_kind("process", move |args| {
        let (agent, executor) = (agent.clone(), executor.clone());
        async move {
            let (spec, task, root): (troupe_os::ProcessSpec, String, String) =
                args.decode().map_err(|e| e.to_string())?;
            let args = troupe_os::actor::ProcessArgs {
                spec,
                ctx: troupe_os::process::TaskContext::new(&executor, &agent, &task, root),
                path: None,
                adopt: false,
            };
            Actor::spawn(None, troupe_os::ProcessActor, args)
                .await
                .map(|(actor, _)| actor.get_cell())
                .map_err(|e| e.to_string())
        }
    });
    println!("testnode {name} listening on {}", node.advertise_addr());

    // The parent holds our stdin; when it goes away, so do we.
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });

    if let Some(target) = arg(&args, "--connect") {
        let target: SocketAddr = target.parse()?;
        match node.connect(target).await {
            Ok(peer) => println!("connect: ok {peer}"),
            Err(e @ ConnectError::CookieRefused { .. }) => println!("connect: error cookie: {e}"),
            Err(e) => println!("connect: error other: {e}"),
        }
    }

    term.recv().await;
    node.stop().await;
    Ok(())
}
