//! Task logs: rotation keeps disk use bounded, and live tails see every line from their
//! offset on.

use std::time::Duration;

use troupe_os::LogPolicy;

use super::{Fixture, sh, until, within};

const MIB: u64 = 1024 * 1024;

fn used(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("stdout.log"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_of_output_in_rotated_files_stays_near_four_mib() {
    let Some(fx) = Fixture::new() else { return };
    let policy = LogPolicy {
        max_file_bytes: MIB,
        max_files: 3,
    };
    // 50 MiB in 1 MiB lines, at a pace a real program might keep.
    let script =
        "for i in $(seq 50); do head -c 1048575 /dev/zero | tr '\\0' x; echo; sleep 0.02; done";
    let p = fx.spawn("chatty", sh(script).logs(policy)).await;
    let sandbox = p.sandbox();
    let mut peak = 0;
    while p.exit_reason().is_none() {
        peak = peak.max(used(&sandbox));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        within(Duration::from_secs(30), p.wait()).await,
        troupe_os::ExitReason::Exited(0)
    );
    // Rotation happens while the task writes, not only at its end: without it the peak
    // would be the whole 50 MiB. How far above the kept 4 MiB it goes depends on how soon
    // the keeper looks again (every 50 ms, later on a loaded machine), so the bound leaves
    // room for that and still tells rotation from none.
    assert!(peak <= 12 * MIB, "peak disk use {peak}");
    // The keeper takes its last look when it learns of the end, as the waiter does: the
    // use settles within moments of the exit, and stays within what is kept.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while used(&sandbox) > 4 * MIB + MIB / 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        used(&sandbox) <= 4 * MIB + MIB / 2,
        "final disk use {}",
        used(&sandbox)
    );
    assert!(sandbox.join("stdout.log.2").exists());
    assert!(
        !sandbox.join("stdout.log.3").exists(),
        "more files than max_files"
    );
    let last = p.stdout().last_lines(1);
    assert_eq!(last.len(), 1);
    assert!(last[0].len() > 1000 && last[0].bytes().all(|b| b == b'x'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tails_see_every_line_after_their_offsets() {
    let Some(fx) = Fixture::new() else { return };
    let script = "for i in $(seq 100); do echo line $i; done; \
                  while [ ! -e more ]; do sleep 0.01; done; \
                  for i in $(seq 101 200); do echo line $i; sleep 0.002; done";
    let p = fx
        .spawn(
            "tail",
            sh(script).logs(LogPolicy {
                // No rotation here: rotation may drop bytes written during it.
                max_file_bytes: 1 << 20,
                max_files: 2,
            }),
        )
        .await;
    let first_half: u64 = (1..=100).map(|i| format!("line {i}\n").len() as u64).sum();
    let from_51: u64 = (1..=50).map(|i| format!("line {i}\n").len() as u64).sum();
    let log = p.stdout().clone();
    assert!(
        until(Duration::from_secs(10), || {
            std::fs::metadata(log.path()).map_or(0, |m| m.len()) > 0
        })
        .await
    );
    // Wait until the keeper has seen the first hundred lines.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.offset().await.unwrap_or(0) < first_half {
        assert!(
            std::time::Instant::now() < deadline,
            "the first half never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut all = log.subscribe(0);
    let mut late = log.subscribe(from_51);
    std::fs::write(p.sandbox().join("more"), "").unwrap();
    within(Duration::from_secs(20), p.wait()).await;
    let expected =
        |from: usize| -> String { (from..=200).map(|i| format!("line {i}\n")).collect() };
    assert_eq!(collect(&mut all, 0).await, expected(1));
    assert_eq!(collect(&mut late, from_51).await, expected(51));
}

/// Everything a tail delivers until the stream ends (its keeper stops after the task's
/// end and a last look), checking that the chunks are contiguous from `from`.
async fn collect(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<troupe_os::logs::LogChunk>,
    from: u64,
) -> String {
    let mut bytes = Vec::new();
    let mut next = from;
    while let Some(chunk) = within(Duration::from_secs(10), rx.recv()).await {
        assert_eq!(chunk.offset, next, "chunks are contiguous");
        next += chunk.bytes.len() as u64;
        bytes.extend(chunk.bytes);
    }
    String::from_utf8(bytes).unwrap()
}
