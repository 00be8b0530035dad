//! The spec service's commands: `troupe apply FILE [--dry-run]`, `troupe diff FILE`,
//! `troupe specs [--json]` and `troupe delete NAME`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use troupe_specs::engine::Plan;
use troupe_specs::service::{Applied, SpecRefused, SpecView, Specs};

use super::Failure;
use super::client::{Client, ClusterArgs, call_failure};
use super::tasks::render_table;
use crate::exit;

/// Arguments of `troupe apply`.
#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// The spec file (TOML; see docs/specs.md).
    file: PathBuf,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Arguments of `troupe diff`.
#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// The spec file.
    file: PathBuf,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Arguments of `troupe specs`.
#[derive(Debug, Args)]
pub(crate) struct SpecsArgs {
    /// JSON for scripts: an array of specs with their children.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Arguments of `troupe delete`.
#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// The spec's name.
    name: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Reads a spec file, or says why not (nothing is sent).
fn read_file(path: &PathBuf) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            exit::INVALID_SPEC,
            format!("cannot read {}: {e}", path.display()),
        )
    })
}

/// The failure of a refused request.
fn refused(e: SpecRefused) -> Failure {
    match e {
        SpecRefused::Invalid(invalid) => Failure::new(
            exit::INVALID_SPEC,
            format!(
                "{} is not a valid spec ({} problem{}); nothing was changed:\n{}",
                invalid.file,
                invalid.problems.len(),
                if invalid.problems.len() == 1 { "" } else { "s" },
                invalid.render()
            ),
        ),
        other => Failure::from(other.to_string()),
    }
}

/// The plan, one line per child: `+ added`, `~ restarted (keys)`, `- removed`.
fn render_plan(applied: &Applied) -> String {
    let Plan {
        add,
        restart,
        remove,
        keep,
    } = &applied.plan;
    let mut out = String::new();
    let verb = if applied.dry_run { "would" } else { "will" };
    let what = if applied.created { "create" } else { "update" };
    out.push_str(&format!("spec {}: {verb} {what}\n", applied.name));
    for child in add {
        out.push_str(&format!("  + {child}  (start: new)\n"));
    }
    for (child, keys) in restart {
        out.push_str(&format!(
            "  ~ {child}  (restart: {} changed)\n",
            keys.join(", ")
        ));
    }
    for child in remove {
        out.push_str(&format!("  - {child}  (stop: gone from the spec)\n"));
    }
    if applied.plan.is_empty() {
        out.push_str("  no child changes");
        if !keep.is_empty() {
            out.push_str(&format!("; {} running, left alone", keep.len()));
        }
        out.push('\n');
    } else if !keep.is_empty() {
        out.push_str(&format!("  = {} running, left alone\n", keep.len()));
    }
    out
}

async fn send_apply(
    cluster: &ClusterArgs,
    file: &PathBuf,
    dry_run: bool,
) -> Result<Applied, Failure> {
    let text = read_file(file)?;
    let client = Client::connect(cluster).await?;
    let answer = Specs::on(client.master_node.clone())
        .apply(&file.display().to_string(), &text, dry_run)
        .await;
    client.close().await;
    answer.map_err(call_failure)?.map_err(refused)
}

pub(crate) async fn apply(args: ApplyArgs) -> Result<u8, Failure> {
    let applied = send_apply(&args.cluster, &args.file, args.dry_run).await?;
    print!("{}", render_plan(&applied));
    Ok(exit::OK)
}

pub(crate) async fn diff(args: DiffArgs) -> Result<u8, Failure> {
    let applied = send_apply(&args.cluster, &args.file, true).await?;
    print!("{}", render_plan(&applied));
    Ok(if applied.plan.is_empty() && !applied.created {
        exit::OK
    } else {
        exit::WOULD_CHANGE
    })
}

pub(crate) async fn specs(args: SpecsArgs) -> Result<(), Failure> {
    let client = Client::connect(&args.cluster).await?;
    let listed = Specs::on(client.master_node.clone()).list().await;
    client.close().await;
    let listed = listed.map_err(call_failure)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
    } else {
        print!("{}", table(&listed));
    }
    Ok(())
}

fn table(specs: &[SpecView]) -> String {
    let header = [
        "SPEC", "CHILD", "STATE", "AGENT", "PORTS", "RESTARTS", "LAST END",
    ];
    let mut rows = Vec::new();
    for spec in specs {
        let row = vec![
            spec.name.clone(),
            String::new(),
            format!(
                "{} ({}/{} running)",
                spec.health, spec.running, spec.desired
            ),
            String::new(),
            String::new(),
            spec.restarts.to_string(),
            String::new(),
        ];
        // Why it gave up, on a line of its own under it.
        rows.push((row, spec.failure.clone()));
        for child in &spec.children {
            let state = child.state.to_string();
            let row = vec![
                String::new(),
                child.path.clone(),
                state,
                child
                    .agent
                    .as_ref()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                child
                    .ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                child.restarts.to_string(),
                child.last_end.clone().unwrap_or_default(),
            ];
            rows.push((row, None));
        }
    }
    render_table(&header, rows)
}

pub(crate) async fn delete(args: DeleteArgs) -> Result<(), Failure> {
    let client = Client::connect(&args.cluster).await?;
    // Children stop in turn, each within its shutdown grace.
    let answer = Specs::on(client.master_node.clone())
        .with_timeout(Duration::from_secs(300))
        .delete(&args.name)
        .await;
    client.close().await;
    let stopped = answer.map_err(call_failure)?.map_err(refused)?;
    println!(
        "spec {} deleted; stopped: {}",
        args.name,
        if stopped.is_empty() {
            "nothing".to_string()
        } else {
            stopped.join(", ")
        }
    );
    Ok(())
}
