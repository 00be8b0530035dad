//! `troupe-shim LAUNCH.json`: the parent of one task (see `troupe_os::shim`). Started by the
//! task's owner; outlives it if need be.

fn main() {
    troupe_os::entry::shim_main(std::env::args_os().nth(1));
}
