//! The workers program against `troupe dev`: its sum is exact, and the worker that crashes
//! on purpose was restarted by the program itself.

use std::path::Path;
use std::process::Command;

use troupe_tests::TEST_COOKIE;

#[test]
fn the_workers_program_restarts_a_crashed_worker_and_gathers_every_result() {
    let workers = env!("CARGO_BIN_EXE_workers");
    // `cargo test --workspace` builds every binary of the workspace beside this one.
    let troupe = Path::new(workers).with_file_name("troupe");
    assert!(
        troupe.is_file(),
        "{} is missing: build the workspace (cargo build --workspace)",
        troupe.display()
    );
    let name = format!("wkdev{}", std::process::id());
    let dir = troupe_tests::ScratchDir::new(&name);
    let (cluster, _litter) =
        troupe_tests::start_dev(&troupe, &name, &dir).expect("troupe dev starts");
    let out = Command::new(workers)
        .args([
            "--workers",
            "4",
            "--upto",
            "100000",
            "--cookie",
            TEST_COOKIE,
        ])
        .args(["--master", &cluster.addr.to_string()])
        .output()
        .expect("the workers program runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout} stderr: {stderr}");
    assert_eq!(
        stdout.trim(),
        "sum of 1..=100000 = 5000050000 from 4 workers (1 restarted)",
        "stderr: {stderr}"
    );
    assert!(stderr.contains("starting it again"), "{stderr}");
}
