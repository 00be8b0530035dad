//! The pi framework against `troupe dev`: its estimate is within 0.05 of pi.

use std::path::Path;
use std::process::Command;

use troupe_tests::TEST_COOKIE;

#[test]
fn the_pi_framework_estimates_pi_on_troupe_dev() {
    let pi = env!("CARGO_BIN_EXE_pi");
    // `cargo test --workspace` builds every binary of the workspace beside this one.
    let troupe = Path::new(pi).with_file_name("troupe");
    assert!(
        troupe.is_file(),
        "{} is missing: build the workspace (cargo build --workspace)",
        troupe.display()
    );
    let name = format!("pidev{}", std::process::id());
    let dir = std::env::temp_dir().join(format!("troupe-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let (cluster, _litter) =
        troupe_tests::start_dev(&troupe, &name, &dir).expect("troupe dev starts");
    let out = Command::new(pi)
        .args([
            "--tasks",
            "8",
            "--samples",
            "500000",
            "--cookie",
            TEST_COOKIE,
        ])
        .args(["--master", &cluster.addr.to_string()])
        .output()
        .expect("pi runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout} stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let estimate: f64 = stdout
        .split_whitespace()
        .nth(2)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("an estimate in {stdout:?}"));
    assert!(
        (estimate - std::f64::consts::PI).abs() < 0.05,
        "{estimate} is not within 0.05 of pi"
    );
    assert!(
        stdout.contains("from 4000000 samples in 8 tasks"),
        "{stdout}"
    );
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
