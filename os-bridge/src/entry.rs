//! The entry points of a shim process, above the two things it can be: the shim of one
//! task (`shim`), or a launcher that forks shims (`launcher`). A program that owns tasks
//! calls [`main_if_shim`] first thing in `main`; `troupe-shim` calls [`shim_main`].

/// The argument that makes a program that calls [`main_if_shim`] act as the shim.
pub const SHIM_FLAG: &str = "--troupe-shim";

/// Acts as the shim and exits, if this process was started as one (`PROGRAM --troupe-shim
/// LAUNCH.json`, or `PROGRAM --troupe-shim --launcher`); returns otherwise. A program that
/// owns tasks calls this first thing in `main`, before it starts any thread (an async
/// runtime included: a launcher forks), and then needs no separate shim binary.
pub fn main_if_shim() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(SHIM_FLAG)) {
        return;
    }
    shim_main(args.next());
}

/// The shim's `main`: a session of its own, the launch plan from `path`, the task run; or,
/// given [`crate::launcher::LAUNCHER_FLAG`] instead of a path, the launcher's.
pub fn shim_main(path: Option<std::ffi::OsString>) -> ! {
    // A session of its own: the owner's terminal, process group and death are not ours.
    let _ = rustix::process::setsid();
    crate::exec::default_signal_dispositions();
    if path.as_deref() == Some(std::ffi::OsStr::new(crate::launcher::LAUNCHER_FLAG)) {
        crate::launcher::launcher_main();
    }
    let Some(path) = path else {
        eprintln!("usage: troupe-shim LAUNCH.json | troupe-shim --launcher");
        std::process::exit(2);
    };
    let plan: crate::shim::LaunchPlan = match std::fs::read(&path)
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
    std::process::exit(crate::shim::serve(&plan));
}
