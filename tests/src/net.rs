//! The fault harness's network: hosts as network namespaces of the test's own, each joined
//! to the test's namespace (where the master runs) by a veth pair, with faults the test
//! turns on and off: a link cut both ways or one way only, latency and loss.
//!
//! A cut is a queue of no room on the link's sending end (`tc qdisc ... pfifo limit 0`):
//! every packet that way is dropped silently, as in a real partition (no error reaches
//! either side, and TCP retransmits until it is healed). One way is one end; both ways,
//! both. It needs no kernel module beyond the plain FIFO queue, which every kernel has.
//! Latency and loss need `tc netem` (`sch_netem`); a kernel without it (a small VM's) says
//! so, and [`NetLab::degrade`] fails with that.
//!
//! ```text
//!   test's namespace (master, CLI)          host namespace tr<N>h<i> (an agent, a framework)
//!     tv<N>h<i>  10.77.<N>.<4i+1>/30  ───veth───  eth0  10.77.<N>.<4i+2>/30
//!                                                  default route via 10.77.<N>.<4i+1>
//! ```
//!
//! A host reaches every address of the test's namespace through its own link, so the master
//! advertises the first host's gateway and every host reaches it there. Traffic goes only to
//! these addresses. The lab's number `<N>` is taken with a marker file that no other lab of
//! any test process holds at the time, so labs of tests running side by side never share
//! an address. Dropping the lab deletes its namespaces (their veth pairs go with them) and
//! frees the number, also when the test failed.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

/// Where the lab numbers are claimed.
const CLAIMS: &str = "/tmp/troupe-netlab";

/// One host of the lab: its namespace and addresses.
#[derive(Debug, Clone)]
pub struct NetHost {
    /// The namespace's name (`ip netns`).
    pub ns: String,
    /// The veth end in the test's namespace.
    pub veth: String,
    /// The host's address.
    pub addr: Ipv4Addr,
    /// The address of the test's namespace on the host's link (its default gateway).
    pub gateway: Ipv4Addr,
}

/// Which way a cut drops packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Both ways.
    Both,
    /// From the host to the test's namespace only (the master hears nothing from it).
    FromHost,
    /// From the test's namespace to the host only (it hears nothing from the master).
    ToHost,
}

/// A set of hosts; dropped, everything it made goes.
#[derive(Debug)]
pub struct NetLab {
    number: u8,
    claim: PathBuf,
    hosts: Vec<NetHost>,
}

/// Runs a command; an error with its output when it fails.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program).args(args).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl NetLab {
    /// A lab of `hosts` namespaces (at most 60). Needs root.
    pub fn new(hosts: usize) -> anyhow::Result<NetLab> {
        anyhow::ensure!(hosts <= 60, "at most 60 hosts in a lab");
        std::fs::create_dir_all(CLAIMS)?;
        // A number no live lab holds: a claim whose process is gone is taken over.
        let (number, claim) = (1..=250u8)
            .find_map(|n| {
                let path = PathBuf::from(CLAIMS).join(n.to_string());
                let stale = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|pid| pid.trim().parse::<i32>().ok())
                    .is_some_and(|pid| !troupe_os::procfs::is_running(pid));
                if stale {
                    let _ = std::fs::remove_file(&path);
                }
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .ok()
                    .map(|mut f| {
                        use std::io::Write;
                        let _ = write!(f, "{}", std::process::id());
                        (n, path)
                    })
            })
            .ok_or_else(|| anyhow::anyhow!("no free lab number under {CLAIMS}"))?;
        let mut lab = NetLab {
            number,
            claim,
            hosts: Vec::new(),
        };
        for i in 0..hosts {
            lab.add_host(i)?;
        }
        Ok(lab)
    }

    fn add_host(&mut self, i: usize) -> anyhow::Result<()> {
        let n = self.number;
        let ns = format!("tr{n}h{i}");
        let veth = format!("tv{n}h{i}");
        let base = 4 * i as u8;
        let gateway = Ipv4Addr::new(10, 77, n, base + 1);
        let addr = Ipv4Addr::new(10, 77, n, base + 2);
        // Leftovers of a lab that died with its number are cleared first.
        let _ = run("ip", &["netns", "del", &ns]);
        let _ = run("ip", &["link", "del", &veth]);
        run("ip", &["netns", "add", &ns])?;
        // Recorded now: from here on, a failure still removes it.
        self.hosts.push(NetHost {
            ns: ns.clone(),
            veth: veth.clone(),
            addr,
            gateway,
        });
        let peer = format!("tp{n}h{i}");
        run(
            "ip",
            &["link", "add", &veth, "type", "veth", "peer", "name", &peer],
        )?;
        run("ip", &["link", "set", &peer, "netns", &ns])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns.as_str()];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        inside(&["ip", "link", "set", &peer, "name", "eth0"])?;
        inside(&["ip", "addr", "add", &format!("{addr}/30"), "dev", "eth0"])?;
        inside(&["ip", "link", "set", "eth0", "up"])?;
        inside(&["ip", "link", "set", "lo", "up"])?;
        inside(&["ip", "route", "add", "default", "via", &gateway.to_string()])?;
        run(
            "ip",
            &["addr", "add", &format!("{gateway}/30"), "dev", &veth],
        )?;
        run("ip", &["link", "set", &veth, "up"])?;
        Ok(())
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &NetHost {
        &self.hosts[i]
    }

    /// The address the master advertises, reachable from every host: the first host's
    /// gateway (an address of the test's namespace).
    pub fn master_addr(&self) -> Ipv4Addr {
        self.hosts[0].gateway
    }

    /// A command that runs `program` in host `i`'s network namespace (only the network:
    /// the host sees the same files, cgroups and processes).
    pub fn command_in(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.hosts[i].ns))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Drops packets between the test's namespace and host `i`, as `cut` says (silently:
    /// no error reaches either side, as in a real partition).
    pub fn cut(&self, i: usize, cut: Cut) -> anyhow::Result<()> {
        self.heal(i);
        let drop_all = ["root", "pfifo", "limit", "0"];
        if matches!(cut, Cut::Both | Cut::ToHost) {
            let mut args = vec!["qdisc", "add", "dev", self.hosts[i].veth.as_str()];
            args.extend_from_slice(&drop_all);
            run("tc", &args)?;
        }
        if matches!(cut, Cut::Both | Cut::FromHost) {
            self.qdisc_in_host(i, "add", &drop_all)?;
        }
        Ok(())
    }

    /// Delays (and, with `loss_percent`, loses) packets both ways between the test's
    /// namespace and host `i`.
    pub fn degrade(&self, i: usize, delay_ms: u32, loss_percent: u32) -> anyhow::Result<()> {
        self.heal(i);
        let (delay, loss) = (format!("{delay_ms}ms"), format!("{loss_percent}%"));
        let netem = ["root", "netem", "delay", &delay, "loss", &loss];
        let mut outside = vec!["qdisc", "add", "dev", self.hosts[i].veth.as_str()];
        outside.extend_from_slice(&netem);
        run("tc", &outside)?;
        self.qdisc_in_host(i, "add", &netem)
    }

    /// `tc qdisc VERB dev eth0 ARGS` in host `i`'s namespace.
    fn qdisc_in_host(&self, i: usize, verb: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec![
            "netns",
            "exec",
            self.hosts[i].ns.as_str(),
            "tc",
            "qdisc",
            verb,
            "dev",
            "eth0",
        ];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Lets every packet through again between the test's namespace and host `i`.
    pub fn heal(&self, i: usize) {
        let _ = run("tc", &["qdisc", "del", "dev", &self.hosts[i].veth, "root"]);
        let _ = self.qdisc_in_host(i, "del", &["root"]);
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for host in &self.hosts {
            // The veth pair goes with the namespace; its end here too, should the
            // namespace be held open by a process still in it.
            let _ = run("ip", &["netns", "del", &host.ns]);
            let _ = run("ip", &["link", "del", &host.veth]);
        }
        let _ = std::fs::remove_file(&self.claim);
    }
}
