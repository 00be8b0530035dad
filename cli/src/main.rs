//! The `troupe` command. `main` only parses and dispatches; each subcommand lives in
//! `commands/`, and the exit codes every command shares are in `exit`.

mod commands;
mod exit;
mod http;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // `troupe --troupe-shim LAUNCH.json` is the parent of a task (see troupe_os::shim), so
    // that a troupe install needs no second binary.
    troupe_os::main_if_shim();
    let cli = match commands::Cli::try_parse() {
        Ok(cli) => cli,
        // `--help` and `--version` print to stdout and succeed; anything else is a usage
        // error with a code of its own (2 means "unreachable" here, not clap's usage code).
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            }
            .into();
        }
    };
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
