//! The `troupe` command. `main` only parses and dispatches; each subcommand lives in
//! `commands/`, and the exit codes every command shares are in `exit`.

mod commands;
mod exit;
mod http;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // `troupe --troupe-shim LAUNCH.json` is the parent of a task (see troupe_os::shim), so
    // that a troupe install needs no second binary.
    troupe_os::shim::main_if_shim();
    let cli = commands::Cli::parse();
    commands::init_tracing(cli.command.default_log_filter());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("troupe: cannot start the async runtime: {e}");
            return exit::FAILURE.into();
        }
    };
    let code = runtime.block_on(commands::dispatch(cli));
    // Sessions and timers may still hold tasks; do not wait for them on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code.into()
}
