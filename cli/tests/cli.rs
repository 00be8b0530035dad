//! `troupe node` and `troupe ping` as a user runs them: real processes, real sockets, the
//! documented exit codes and messages.

use std::process::Command;
use std::time::Duration;

use troupe_tests::ChildNode;

const TROUPE: &str = env!("CARGO_BIN_EXE_troupe");

fn node(name: &str, cookie: &str) -> ChildNode {
    let mut cmd = Command::new(TROUPE);
    cmd.args([
        "node",
        "--name",
        name,
        "--listen",
        "127.0.0.1:0",
        "--cookie",
        cookie,
    ]);
    ChildNode::spawn(name, cmd).expect("troupe node starts and prints its address")
}

fn ping(addr: &str, cookie: &str) -> (i32, String, String) {
    let out = Command::new(TROUPE)
        .args(["ping", "--cookie", cookie, "--timeout", "5000", addr])
        .output()
        .expect("troupe ping runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ping_a_node_answers_pong_and_exits_0() {
    let b = node("b", "c1");
    let (code, stdout, stderr) = ping(&b.addr.to_string(), "c1");
    assert_eq!(code, 0, "stdout: {stdout} stderr: {stderr}");
    assert!(stdout.starts_with("pong from b in "), "{stdout}");
    assert!(stdout.trim_end().ends_with(" ms"), "{stdout}");
}

#[test]
fn ping_with_a_wrong_cookie_exits_3_and_names_the_cookie() {
    let b = node("b", "c1");
    let (code, stdout, stderr) = ping(&b.addr.to_string(), "not-c1");
    assert_eq!(code, 3, "stdout: {stdout} stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("cookies differ"), "{stderr}");
}

#[test]
fn ping_with_nothing_listening_exits_2() {
    // Bind then release a port, so that nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, stdout, stderr) = ping(&format!("127.0.0.1:{port}"), "c1");
    assert_eq!(code, 2, "stdout: {stdout} stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
}

#[test]
fn a_node_stops_cleanly_on_sigterm() {
    let mut b = node("b", "c1");
    b.signal("TERM").unwrap();
    let status = b.wait_exit(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_cookie_comes_from_the_environment_or_a_created_cookie_file() {
    let dir = std::env::temp_dir().join(format!("troupe-cli-cookie-{}", std::process::id()));
    let file = dir.join("cookie");
    let mut cmd = Command::new(TROUPE);
    cmd.args(["node", "--name", "b", "--listen", "127.0.0.1:0"])
        .env_remove("TROUPE_COOKIE")
        .env("TROUPE_COOKIE_FILE", &file);
    let b = ChildNode::spawn("b", cmd).unwrap();
    let cookie = std::fs::read_to_string(&file).expect("the cookie file was created");
    let out = Command::new(TROUPE)
        .args(["ping", &b.addr.to_string()])
        .env("TROUPE_COOKIE", cookie.trim())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(b);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs `troupe ARGS` with a test cookie and no master to find; returns code and stderr.
fn troupe_args(args: &[String]) -> (i32, String) {
    let out = Command::new(TROUPE)
        .args(args)
        .env("TROUPE_COOKIE", "prop-cookie")
        .env("TROUPE_MASTER", "127.0.0.1:1")
        .env(
            "TROUPE_WORK_DIR",
            std::env::temp_dir().join("troupe-cli-prop"),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .expect("troupe runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_numeric_and_duration_flag_takes_random_input_without_a_panic_and_exits_as_documented() {
    // A port held by this test: a server command whose flags parse stops at its listener
    // ("cannot listen on ...: address already in use", exit 1) instead of serving.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = held.local_addr().unwrap().to_string();
    let server = |cmd: &str| -> Vec<String> {
        let mut v = vec![cmd.to_string(), "--listen".into(), busy.clone()];
        match cmd {
            "node" => v.extend(["--name".into(), "prop".into()]),
            "agent" => v.extend(["--name".into(), "prop".into()]),
            _ => {}
        }
        v
    };
    let client = |cmd: &[&str]| -> Vec<String> { cmd.iter().map(|s| s.to_string()).collect() };
    // Each command line, the flag under test, and what follows the flag's value.
    let cases: Vec<(Vec<String>, &str, Vec<String>)> = vec![
        (client(&["run"]), "--cpus", client(&["--", "true"])),
        (client(&["run"]), "--mem", client(&["--", "true"])),
        (client(&["run"]), "--grace", client(&["--", "true"])),
        (client(&["run"]), "--count", client(&["--", "true"])),
        (client(&["spawn"]), "--cpus", client(&["--", "true"])),
        (client(&["spawn"]), "--mem", client(&["--", "true"])),
        (client(&["spawn"]), "--grace", client(&["--", "true"])),
        (client(&["ping"]), "--timeout", client(&["127.0.0.1:1"])),
        (client(&["tree"]), "--depth", vec![]),
        (server("node"), "--heartbeat-ms", vec![]),
        (server("node"), "--phi-threshold", vec![]),
        (server("master"), "--allocation-interval-ms", vec![]),
        (server("master"), "--offer-timeout-ms", vec![]),
        (server("master"), "--agent-gone-after", vec![]),
        (server("master"), "--task-history", vec![]),
        (server("master"), "--phi-threshold", vec![]),
        (server("agent"), "--cpus", vec![]),
        (server("agent"), "--mem", vec![]),
        (server("agent"), "--disk", vec![]),
        (server("dev"), "--agents", vec![]),
        (server("dev"), "--cpus", vec![]),
    ];
    // Special values first, then random ones from a fixed seed (xorshift), so that a
    // failure names its input and reproduces.
    let special = [
        "0",
        "-1",
        "-0",
        "1e300",
        "-1e300",
        "NaN",
        "inf",
        "-inf",
        "1e-320",
        "",
        "abc",
        "18446744073709551616",
        "99999999999999999999999",
        "0.5",
        "3",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let documented = [1, 2, 3, 4, 64];
    for (prefix, flag, suffix) in &cases {
        let mut values: Vec<String> = special.iter().map(|s| s.to_string()).collect();
        for _ in 0..4 {
            values.push(match random() % 3 {
                0 => f64::from_bits(random()).to_string(),
                1 => ((random() as i64) >> (random() % 60)).to_string(),
                _ => (0..random() % 6)
                    .map(|_| char::from_u32((random() % 0x7f) as u32 + 1).unwrap_or('x'))
                    .collect(),
            });
        }
        for value in values {
            let mut args = prefix.clone();
            args.push(format!("{flag}={value}"));
            args.extend(suffix.iter().cloned());
            let (code, err) = troupe_args(&args);
            assert!(
                !err.contains("panicked") && documented.contains(&code),
                "troupe {args:?} exited {code}: {err}"
            );
        }
    }
    drop(held);
}

#[test]
fn usage_errors_exit_64_and_negative_amounts_are_refused_as_amounts() {
    let (code, err) = troupe_args(&[
        "run".into(),
        "--cpus".into(),
        "-1".into(),
        "--".into(),
        "true".into(),
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("cpus must be more than 0"), "{err}");
    assert!(!err.contains("'-- -1'"), "{err}");
    let (code, err) = troupe_args(&[
        "run".into(),
        "--grace".into(),
        "1e300".into(),
        "--".into(),
        "true".into(),
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("seconds"), "{err}");
    let (code, err) = troupe_args(&["no-such-command".into()]);
    assert_eq!(code, 64, "{err}");
    let (code, _) = troupe_args(&["--help".into()]);
    assert_eq!(code, 0);
}

#[test]
fn a_port_in_use_is_named_with_its_address_and_exits_1() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = held.local_addr().unwrap().to_string();
    for cmd in ["node", "master"] {
        let (code, err) = troupe_args(&[
            cmd.into(),
            "--name".into(),
            "busy".into(),
            "--listen".into(),
            busy.clone(),
        ]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("cannot listen on {busy}: address already in use")),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn an_explicit_cookie_file_that_does_not_exist_is_an_error_naming_it() {
    let dir = std::env::temp_dir().join(format!("troupe-cli-nocookie-{}", std::process::id()));
    let path = dir.join("sub").join("cookie");
    let out = Command::new(TROUPE)
        .args(["ping", "--cookie-file"])
        .arg(&path)
        .arg("127.0.0.1:1")
        .env_remove("TROUPE_COOKIE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(!dir.exists(), "nothing is created at {}", dir.display());
}

#[test]
fn a_master_address_may_be_a_host_name() {
    let b = node("hn", "hn-cookie");
    let port = b.addr.port();
    let (code, out, err) = ping(&format!("localhost:{port}"), "hn-cookie");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pong from hn"), "{out}");
}

#[test]
fn a_command_that_disconnects_normally_is_no_warning_in_the_masters_log() {
    use std::io::{BufRead, BufReader};
    let dir = troupe_tests::ScratchDir::new("quiet-leave");
    let _litter: Vec<_> = ["ql-a1", "ql-a2"]
        .map(|a| troupe_tests::TaskLitter::new(dir.join("work").join(a).join("sandboxes"), a))
        .into();
    let log = dir.join("master.log");
    let mut master = Command::new(TROUPE)
        .args([
            "dev",
            "--name",
            "ql",
            "--listen",
            "127.0.0.1:0",
            "--cookie",
            "ql",
        ])
        .args(["--cpus", "1", "--mem", "512", "--work-dir"])
        .arg(dir.join("work"))
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("troupe master starts");
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lines = BufReader::new(master.stdout.take().unwrap()).lines();
    let master = Reap(master);
    let addr = lines
        .find_map(|l| {
            let l = l.ok()?;
            l.contains("listening on")
                .then(|| l.rsplit(' ').next().unwrap_or_default().to_string())
        })
        .expect("the master says where it listens");
    // Twenty rounds: the going of a command's node raced its own stop, and lost now and
    // then (a few in forty commands).
    let commands = [
        &["ps"][..],
        &["run", "--", "true"],
        &["ping", &addr],
        &["tree"],
    ];
    for _ in 0..20 {
        for args in commands {
            let out = Command::new(TROUPE)
                .args(args)
                .env("TROUPE_MASTER", &addr)
                .env("TROUPE_COOKIE", "ql")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "troupe {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // The last command's going is logged by now, or never.
    std::thread::sleep(Duration::from_millis(500));
    drop(master);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("node left"),
        "the commands' going is logged, as info: {text}"
    );
    assert!(
        !text.contains("node down"),
        "no command's going is a warning: {text}"
    );
}

#[test]
fn an_agent_that_cannot_reach_its_master_says_it_is_retrying_and_where() {
    let dir = troupe_tests::ScratchDir::new("agent-retry");
    let log = dir.join("agent.log");
    let master = format!("127.0.0.1:{}", troupe_tests::free_port());
    let agent_name = format!("ar{}", std::process::id());
    let _litter = troupe_tests::TaskLitter::new(dir.join("work").join("sandboxes"), &agent_name);
    let mut cmd = Command::new(TROUPE);
    cmd.args([
        "agent",
        "--name",
        &agent_name,
        "--master",
        &master,
        "--cookie",
        "ar",
    ])
    .args(["--listen", "127.0.0.1:0", "--work-dir"])
    .arg(dir.join("work"))
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Reap(cmd.spawn().expect("troupe agent starts"));
    let said = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(needle)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    assert!(
        said("cannot reach the master; retrying"),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(&master), "it says where: {text}");
    // Once the master is there, it says it reached it.
    let mut cmd = Command::new(TROUPE);
    cmd.args([
        "master", "--name", "arm", "--listen", &master, "--cookie", "ar",
    ]);
    let _master = ChildNode::spawn("arm", cmd).expect("troupe master starts");
    assert!(
        said("reached the master"),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
