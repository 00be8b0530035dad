//! The spec format: malformed files refused with every problem's place and name, the file
//! and the builder one type both ways, and the example specs valid.

use std::collections::BTreeMap;
use std::time::Duration;

use troupe_actors::protocol::{AgentId, AgentInfo, Resources};
use troupe_runtime::supervisor::{AutoShutdown, Restart, Strategy};
use troupe_specs::{Child, Needs, ProcessChild, Shutdown, Spec, SupervisorChild, read};

const GOOD: &str = r#"name = "web"
strategy = "one_for_one"

[[children]]
id = "server"
command = "python3"
args = ["-m", "http.server"]
"#;

// The table of malformed specs, shared with the test that applies each to a live cluster
// (`cli/tests/specs.rs`).
include!("cases/malformed.rs");

#[test]
fn malformed_specs_are_refused_with_file_line_column_and_the_problem_named() {
    assert!(MALFORMED.len() >= 20);
    for (case, text, (line, column), words) in MALFORMED {
        let refused = read(text, "bad.toml", &[]).expect_err(case);
        let first = &refused.problems[0];
        assert_eq!(
            (first.line, first.column),
            (*line, *column),
            "{case}: {}",
            refused.render()
        );
        let rendered = refused.render();
        assert!(
            rendered.starts_with(&format!("bad.toml:{line}:{column}: ")),
            "{case}: {rendered}"
        );
        for word in *words {
            assert!(
                rendered.contains(word),
                "{case}: {word:?} not in {rendered}"
            );
        }
    }
}

#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    let text = "name = \"s\"\nstrategy = \"nope\"\nintensity = \"x\"\n[[children]]\nid = \"a\"\ncomand = \"true\"\n[[children]]\nid = \"b\"\ncommand = \"true\"\nrestart = \"maybe\"\n";
    let refused = read(text, "s.toml", &[]).unwrap_err();
    let lines: Vec<usize> = refused.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![2, 3, 4, 6, 10], "{}", refused.render());
    assert!(refused.render().contains("did you mean `command`"));
}

fn agent(id: &str, rack: &str, cpus: f64, mem: f64) -> AgentInfo {
    AgentInfo {
        id: AgentId(id.into()),
        hostname: format!("host-{id}"),
        attributes: BTreeMap::from([("rack".to_string(), rack.to_string())]),
        node: format!("node-{id}"),
        addr: "127.0.0.1:1".into(),
        resources: Resources::new(cpus, mem),
        work_dir: "/tmp".into(),
        ports: Default::default(),
        life: 1,
    }
}

#[test]
fn resources_no_agent_can_ever_hold_and_placements_no_agent_meets_are_refused() {
    let agents = [
        agent("a1", "r1", 2.0, 1024.0),
        agent("a2", "r2", 4.0, 512.0),
    ];
    let big = "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\nresources = { cpus = 3, mem = 1000 }\n";
    let refused = read(big, "s.toml", &agents).unwrap_err();
    assert_eq!(
        (refused.problems[0].line, refused.problems[0].column),
        (5, 1)
    );
    assert!(
        refused
            .render()
            .contains("no agent it may run on can ever hold"),
        "{}",
        refused.render()
    );
    let nowhere =
        "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\nplacement = [\"rack = r9\"]\n";
    assert!(
        read(nowhere, "s.toml", &agents)
            .unwrap_err()
            .render()
            .contains("no agent meets its placement")
    );
    let fits = "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\nresources = { cpus = 3, mem = 500 }\nplacement = [\"rack = r2\"]\n";
    read(fits, "s.toml", &agents).unwrap();
}

#[test]
fn a_good_spec_reads_into_the_builders_value() {
    let spec = read(GOOD, "web.toml", &[]).unwrap();
    let built =
        Spec::new("web").child(ProcessChild::new("server", "python3").args(["-m", "http.server"]));
    assert_eq!(spec, built);
}

/// A small deterministic generator (xorshift), so the property runs the same every time.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn word(&mut self) -> String {
        const WORDS: &[&str] = &["web", "db", "a", "x-1", "cache_2", "b"];
        WORDS[self.below(WORDS.len() as u64) as usize].to_string()
    }

    fn text(&mut self) -> String {
        const TEXTS: &[&str] = &[
            "",
            "--port",
            "a b",
            "\"quoted\"",
            "ünï",
            "{port0}",
            "x=y",
            "\\",
        ];
        TEXTS[self.below(TEXTS.len() as u64) as usize].to_string()
    }

    fn restart(&mut self) -> Restart {
        [Restart::Permanent, Restart::Transient, Restart::Temporary][self.below(3) as usize]
    }

    fn strategy(&mut self) -> Strategy {
        [
            Strategy::OneForOne,
            Strategy::OneForAll,
            Strategy::RestForOne,
        ][self.below(3) as usize]
    }

    fn auto(&mut self) -> AutoShutdown {
        [
            AutoShutdown::Never,
            AutoShutdown::AnySignificant,
            AutoShutdown::AllSignificant,
        ][self.below(3) as usize]
    }

    fn process(&mut self, id: String, auto: AutoShutdown) -> ProcessChild {
        let mut p = ProcessChild::new(id, format!("/bin/{}", self.word()))
            .args((0..self.below(4)).map(|_| self.text()).collect::<Vec<_>>())
            .restart(self.restart())
            .replicas(1 + self.below(3) as u32);
        for _ in 0..self.below(3) {
            p = p.env(format!("K{}", self.below(9)), self.text());
        }
        if self.below(2) == 0 {
            p = p.resources(Needs {
                cpus: (1 + self.below(40)) as f64 / 8.0,
                mem: (1 + self.below(512)) as f64,
                disk: self.below(3) as f64 * 100.0,
                ports: self.below(3) as u16,
            });
        }
        match self.below(4) {
            0 => p = p.placement("rack = r1").placement("host != h2"),
            1 => p.agent = Some("a1".into()),
            _ => {}
        }
        p = p.shutdown(match self.below(3) {
            0 => Shutdown::BrutalKill,
            1 => Shutdown::Infinity,
            _ => Shutdown::Grace(Duration::from_millis(self.below(20_000))),
        });
        if auto != AutoShutdown::Never {
            p = p.significant(self.below(2) == 0);
        }
        if self.below(3) == 0 {
            p.dir = Some(self.text()).filter(|d| !d.is_empty());
        }
        if self.below(2) == 0 {
            p.stdin = troupe_os::StdinMode::Pipe;
        }
        p
    }

    fn children(&mut self, depth: u32, auto: AutoShutdown) -> Vec<Child> {
        let n = 1 + self.below(3);
        (0..n)
            .map(|i| {
                let id = format!("{}{i}", self.word());
                if depth < 2 && self.below(4) == 0 {
                    let own = self.auto();
                    let mut s = SupervisorChild::new(id)
                        .strategy(self.strategy())
                        .intensity(
                            self.below(10) as u32,
                            Duration::from_secs(1 + self.below(60)),
                        );
                    s.auto_shutdown = own;
                    s.restart = self.restart();
                    if auto != AutoShutdown::Never {
                        s.significant = self.below(2) == 0;
                    }
                    s.children = self.children(depth + 1, own);
                    Child::Supervisor(s)
                } else {
                    Child::Process(self.process(id, auto))
                }
            })
            .collect()
    }
}

#[test]
fn the_toml_file_and_the_builder_round_trip_both_ways() {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    for case in 0..500 {
        let auto = g.auto();
        let mut spec = Spec::new(format!("spec-{case}"))
            .strategy(g.strategy())
            .intensity(
                g.below(10) as u32,
                Duration::from_millis(1 + g.below(100_000)),
            )
            .auto_shutdown(auto);
        spec.children = g.children(0, auto);
        let text = spec.to_toml();
        let back = match read(&text, "generated.toml", &[]) {
            Ok(back) => back,
            Err(e) => panic!("case {case}: {}\n{text}", e.render()),
        };
        assert_eq!(back, spec, "case {case}:\n{text}");
        assert_eq!(back.to_toml(), text, "case {case}");
    }
}

#[test]
fn the_example_specs_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/specs");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = read(&text, &path.display().to_string(), &[]) {
                panic!("{}", e.render());
            }
            seen += 1;
        }
    }
    assert!(seen >= 3, "examples/specs holds {seen} specs");
}
