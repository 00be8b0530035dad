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
