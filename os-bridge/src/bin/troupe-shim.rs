//! `troupe-shim LAUNCH.json`: the parent of one task (see `troupe_os::shim`). Started by the
//! task's owner; outlives it if need be.

fn main() {
    // A session of its own: the owner's terminal, process group and death are not ours.
    let _ = rustix::process::setsid();
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: troupe-shim LAUNCH.json");
        std::process::exit(2);
    };
    let plan: troupe_os::shim::LaunchPlan = match std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!(
                "troupe-shim: cannot read {}: {e}",
                std::path::Path::new(&path).display()
            );
            std::process::exit(2);
        }
    };
    std::process::exit(troupe_os::shim::run(&plan));
}
