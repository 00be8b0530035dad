//! `troupe-bench [NAME...] [--quick] [--json FILE]`: every headline figure beside its
//! baseline, measured in the same run, reported as a ratio (see `docs/benchmarks.md`).

mod measures;
mod report;

use clap::Parser;

use report::{Report, Skipped};

/// The measures there are, by name.
const MEASURES: &[&str] = &[
    "throughput",
    "remote",
    "restart",
    "launch",
    "tasks-per-minute",
    "agent-failure",
    "scale",
];

/// The measures not built yet.
const LATER: &[(&str, &str)] = &[];

#[derive(Parser, Debug)]
#[command(
    name = "troupe-bench",
    about = "troupe's figures beside their baselines"
)]
struct Cli {
    /// Which measures to run (default: all): throughput, remote, restart, launch,
    /// tasks-per-minute, agent-failure, scale.
    names: Vec<String>,
    /// Fewer repetitions: done in under two minutes.
    #[arg(long)]
    quick: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
    /// Internal: serve as the other node of the remote measure.
    #[arg(long, hide = true, value_name = "NAME")]
    serve: Option<String>,
    /// Internal: serve as an agent of the agent-failure measure.
    #[arg(long, hide = true, value_name = "NAME")]
    serve_agent: Option<String>,
    /// Internal: the master of `--serve-agent`.
    #[arg(long, hide = true, value_name = "HOST:PORT")]
    master: Option<String>,
    /// Internal: the work directory of `--serve-agent`.
    #[arg(long, hide = true, value_name = "DIR")]
    work_dir: Option<String>,
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let kernel = rustix_kernel();
    // Whether a task joins its cgroup at once or after an RCU grace period: it moves the
    // launch figures by several milliseconds (docs/processes.md).
    let cgroups = if !troupe_os::cgroup::available() {
        "no cgroups (not root)"
    } else if troupe_os::cgroup::favors_dynmods() {
        "cgroups with favordynmods"
    } else {
        "cgroups without favordynmods"
    };
    let work = std::env::temp_dir();
    format!(
        "{cpus} cpus ({model}), Linux {kernel}, {cgroups}, sandboxes in {} on {}",
        work.display(),
        filesystem_of(&work)
    )
}

/// The filesystem a directory is on, as the cluster measures' sandboxes see it: its type,
/// and for ext4 whether it has a journal (without one, making an inode checks each
/// candidate for a recent deletion, slowly after many deletions: see docs/benchmarks.md).
fn filesystem_of(dir: &std::path::Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    // The mount with the longest mount point that holds `dir`.
    let Some((source, fstype)) = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some((f.next()?, f.next()?, f.next()?))
        })
        .filter(|(_, point, _)| dir.starts_with(point))
        .max_by_key(|(_, point, _)| point.len())
        .map(|(source, _, fstype)| (source, fstype))
    else {
        return "an unknown filesystem".into();
    };
    if fstype != "ext4" {
        return fstype.to_string();
    }
    let device = source.rsplit('/').next().unwrap_or(source);
    match std::fs::read_to_string(format!("/sys/fs/ext4/{device}/journal_task")) {
        Ok(task) if task.trim() == "<none>" => "ext4 without a journal".into(),
        Ok(_) => "ext4 with a journal".into(),
        Err(_) => "ext4".into(),
    }
}

fn rustix_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    // The restart measure's tasks are parented by this binary acting as the shim.
    troupe_os::main_if_shim();
    let cli = Cli::parse();
    // RUST_LOG=troupe_os=debug,troupe_actors=debug shows where a measure's time goes, with
    // microsecond timestamps, on standard error.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(name) = cli.serve {
        return runtime.block_on(measures::remote::serve(&name));
    }
    if let Some(name) = cli.serve_agent {
        let master = cli.master.unwrap_or_default();
        let work = cli.work_dir.unwrap_or_default();
        return runtime.block_on(measures::cluster::serve_agent(&name, &master, &work));
    }
    for name in &cli.names {
        anyhow::ensure!(
            MEASURES.contains(&name.as_str()) || LATER.iter().any(|(n, _)| n == name),
            "unknown measure {name:?}; known: {}",
            MEASURES.join(", ")
        );
    }
    let wanted = |name: &str| cli.names.is_empty() || cli.names.iter().any(|n| n == name);
    let _work_dirs = measures::WorkDirs;
    let mut report = Report {
        machine: machine(),
        quick: cli.quick,
        ..Report::default()
    };
    runtime.block_on(async {
        if wanted("throughput") {
            report
                .figures
                .push(measures::throughput::run(cli.quick).await?);
        }
        if wanted("remote") {
            let remote = measures::remote::run(cli.quick).await?;
            let troupe_p50 = remote.troupe;
            report.figures.push(remote);
            match measures::remote::erlang(troupe_p50, cli.quick).await {
                Ok(figure) => report.figures.push(figure),
                Err(skipped) => report.skipped.push(skipped),
            }
        }
        if wanted("restart") {
            let restart = measures::restart::run(cli.quick).await?;
            let troupe_us = restart.troupe;
            report.figures.push(restart);
            match measures::restart::supervisord(troupe_us, cli.quick).await {
                Ok(figure) => report.figures.push(figure),
                Err(skipped) => report.skipped.push(skipped),
            }
        }
        if wanted("launch") {
            report
                .figures
                .extend(measures::cluster::launch(cli.quick).await?);
        }
        if wanted("tasks-per-minute") {
            report
                .figures
                .push(measures::cluster::tasks_per_minute(cli.quick).await?);
        }
        if wanted("agent-failure") {
            report
                .figures
                .extend(measures::cluster::agent_failure(cli.quick).await?);
        }
        if wanted("scale") {
            report
                .figures
                .extend(measures::scale::run(cli.quick).await?);
        }
        anyhow::Ok(())
    })?;
    for (name, why) in LATER {
        if wanted(name) {
            report.skipped.push(Skipped {
                name: (*name).into(),
                why: (*why).into(),
            });
        }
    }
    print!("{}", report.table());
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
