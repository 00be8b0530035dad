//! Tests of the pure supervisor core: exact decisions for given events, and a property test
//! against a small reference model of the OTP rules.

use std::time::Duration;

use super::*;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A core whose children all started; returns it with the instance of each child.
fn started(flags: SupFlags, specs: &[ChildSpec]) -> (Core, Vec<Instance>) {
    let mut core = Core::new(flags, specs).expect("valid spec");
    let mut instances = Vec::new();
    for spec in specs {
        let i = core.next_instance();
        core.add(spec.clone(), &Started::Running(i));
        instances.push(i);
    }
    (core, instances)
}

/// Carries out a restart plan as the actor would, with every start succeeding.
fn carry_out(core: &mut Core, decision: &Decision) -> Vec<String> {
    let Decision::Restart { stop, start } = decision else {
        return vec![];
    };
    for id in stop {
        core.stopped_by_supervisor(id);
    }
    let mut started = vec![];
    for id in start {
        if core.restart_spec(id).is_some() {
            let i = core.next_instance();
            assert_eq!(core.restarted(id, &Started::Running(i)), Decision::Nothing);
            started.push(id.clone());
        }
    }
    started
}

fn instance(core: &Core, id: &str) -> Instance {
    core.entry(id).and_then(|e| e.instance).expect("running")
}

fn err() -> DownReason {
    DownReason::Error("boom".into())
}

#[test]
fn intensity_exceeded_within_the_period() {
    let flags = SupFlags::new(Strategy::OneForOne).intensity(2, secs(10.0));
    let (mut core, _) = started(flags, &[ChildSpec::worker("a")]);
    for t in [0.0, 4.0] {
        let d = core.child_exited(instance(&core, "a"), &err(), "boom", secs(t));
        assert_eq!(
            d,
            Decision::Restart {
                stop: vec![],
                start: vec!["a".into()]
            }
        );
        carry_out(&mut core, &d);
    }
    // The third restart within 10 s is one too many.
    let d = core.child_exited(instance(&core, "a"), &err(), "boom", secs(9.0));
    assert_eq!(
        d,
        Decision::Shutdown {
            reason: intensity_reason("a")
        }
    );
}

#[test]
fn intensity_not_exceeded_across_the_period() {
    let flags = SupFlags::new(Strategy::OneForOne).intensity(2, secs(10.0));
    let (mut core, _) = started(flags, &[ChildSpec::worker("a")]);
    // Restarts at 0 and 6; at 10.5 the one at 0 has left the window.
    for t in [0.0, 6.0, 10.5, 16.5, 21.0] {
        let d = core.child_exited(instance(&core, "a"), &err(), "boom", secs(t));
        assert!(matches!(d, Decision::Restart { .. }), "at {t}: {d:?}");
        carry_out(&mut core, &d);
    }
    // 16.5 and 21 are in the window of 25, so a third within it is too many.
    let d = core.child_exited(instance(&core, "a"), &err(), "boom", secs(25.0));
    assert!(matches!(d, Decision::Shutdown { .. }));
    assert!(
        core.entry("a").is_none(),
        "the child that broke the limit is forgotten"
    );
}

#[test]
fn a_restart_exactly_one_period_ago_still_counts() {
    let mut window = RestartWindow::new(1, secs(5.0));
    assert!(window.add(secs(0.0)));
    assert!(!window.add(secs(5.0)));
    let mut window = RestartWindow::new(1, secs(5.0));
    assert!(window.add(secs(0.0)));
    assert!(window.add(secs(5.001)));
}

#[test]
fn zero_intensity_gives_up_at_the_first_restart() {
    let flags = SupFlags::new(Strategy::OneForOne).intensity(0, secs(1.0));
    let (mut core, i) = started(flags, &[ChildSpec::worker("a")]);
    assert!(matches!(
        core.child_exited(i[0], &err(), "boom", secs(0.0)),
        Decision::Shutdown { .. }
    ));
}

fn significant(id: &str, restart: Restart) -> ChildSpec {
    ChildSpec::worker(id).restart(restart).significant(true)
}

#[test]
fn significance_needs_auto_shutdown() {
    assert_eq!(
        Core::new(SupFlags::default(), &[significant("a", Restart::Transient)]).err(),
        Some(SpecError::SignificantWithoutAutoShutdown { id: "a".into() })
    );
    let dynamic =
        SupFlags::new(Strategy::SimpleOneForOne).auto_shutdown(AutoShutdown::AnySignificant);
    assert_eq!(
        Core::new(dynamic, &[ChildSpec::worker("t")]).err(),
        Some(SpecError::AutoShutdownOnDynamic)
    );
}

#[test]
fn auto_shutdown_any_significant() {
    let flags = SupFlags::new(Strategy::OneForOne).auto_shutdown(AutoShutdown::AnySignificant);
    let specs = [
        significant("a", Restart::Transient),
        significant("b", Restart::Temporary),
        ChildSpec::worker("c").restart(Restart::Temporary),
    ];
    let (mut core, i) = started(flags, &specs);
    // A non-significant child stopping changes nothing.
    assert_eq!(
        core.child_exited(i[2], &DownReason::Normal, "normal", secs(0.0)),
        Decision::Nothing
    );
    // A significant transient child that fails is restarted, not a reason to stop.
    let d = core.child_exited(i[0], &err(), "boom", secs(0.0));
    assert!(matches!(d, Decision::Restart { .. }));
    carry_out(&mut core, &d);
    // The first significant child to stop for good stops the supervisor.
    assert!(matches!(
        core.child_exited(instance(&core, "a"), &DownReason::Shutdown, "shutdown", secs(1.0)),
        Decision::Shutdown { reason } if reason.starts_with("shutdown: auto_shutdown")
    ));
}

#[test]
fn auto_shutdown_all_significant() {
    let flags = SupFlags::new(Strategy::OneForOne).auto_shutdown(AutoShutdown::AllSignificant);
    let specs = [
        significant("a", Restart::Transient),
        significant("b", Restart::Temporary),
        ChildSpec::worker("c"),
    ];
    let (mut core, i) = started(flags, &specs);
    assert_eq!(
        core.child_exited(i[1], &err(), "boom", secs(0.0)),
        Decision::Nothing,
        "one significant child is still running"
    );
    assert!(matches!(
        core.child_exited(i[0], &DownReason::Normal, "normal", secs(0.0)),
        Decision::Shutdown { .. }
    ));
}

#[test]
fn strategies_plan_the_otp_restarts() {
    let specs = [
        ChildSpec::worker("a"),
        ChildSpec::worker("b"),
        ChildSpec::worker("c"),
    ];
    let flags = |s| SupFlags::new(s).intensity(10, secs(1.0));
    let (mut core, i) = started(flags(Strategy::OneForAll), &specs);
    assert_eq!(
        core.child_exited(i[1], &err(), "boom", secs(0.0)),
        Decision::Restart {
            stop: vec!["c".into(), "a".into()],
            start: vec!["a".into(), "b".into(), "c".into()]
        }
    );
    let (mut core, i) = started(flags(Strategy::RestForOne), &specs);
    assert_eq!(
        core.child_exited(i[0], &err(), "boom", secs(0.0)),
        Decision::Restart {
            stop: vec!["c".into(), "b".into()],
            start: vec!["a".into(), "b".into(), "c".into()]
        }
    );
    let (mut core, i) = started(flags(Strategy::OneForOne), &specs);
    assert_eq!(
        core.child_exited(i[2], &DownReason::Killed, "killed", secs(0.0)),
        Decision::Restart {
            stop: vec![],
            start: vec!["c".into()]
        }
    );
}

#[test]
fn a_failed_restart_is_retried_and_each_try_counts() {
    let flags = SupFlags::new(Strategy::OneForOne).intensity(2, secs(10.0));
    let (mut core, i) = started(flags, &[ChildSpec::worker("a")]);
    let d = core.child_exited(i[0], &err(), "boom", secs(0.0));
    assert_eq!(
        core.restarted("a", &Started::Failed("no".into())),
        Decision::TryAgain { id: "a".into() }
    );
    assert!(matches!(d, Decision::Restart { .. }));
    assert_eq!(
        core.entry("a").map(|e| e.state),
        Some(ChildState::Restarting)
    );
    assert_eq!(core.counts().active, 0);
    assert!(matches!(
        core.try_again("a", secs(1.0)),
        Decision::Restart { .. }
    ));
    assert_eq!(
        core.restarted("a", &Started::Failed("no".into())),
        Decision::TryAgain { id: "a".into() }
    );
    assert!(matches!(
        core.try_again("a", secs(2.0)),
        Decision::Shutdown { .. }
    ));
}

#[test]
fn operator_errors_are_otps() {
    let flags = SupFlags::new(Strategy::OneForOne);
    let (mut core, _) = started(flags, &[ChildSpec::worker("a")]);
    assert_eq!(
        core.check_new(&ChildSpec::worker("a")),
        Err(ChildError::AlreadyStarted { id: "a".into() })
    );
    assert_eq!(
        core.delete("a"),
        Err(ChildError::Running { id: "a".into() })
    );
    assert_eq!(
        core.check_restart("a"),
        Err(ChildError::Running { id: "a".into() })
    );
    core.stopped_by_supervisor("a");
    assert_eq!(
        core.check_new(&ChildSpec::worker("a")),
        Err(ChildError::AlreadyPresent { id: "a".into() })
    );
    assert!(core.check_restart("a").is_ok());
    assert_eq!(core.delete("a"), Ok(()));
    assert_eq!(
        core.delete("a"),
        Err(ChildError::NotFound { id: "a".into() })
    );
    assert_eq!(
        core.check_terminate("zz"),
        Err(ChildError::NotFound { id: "zz".into() })
    );
}

#[test]
fn invalid_specs_are_refused() {
    let flags = SupFlags::default();
    assert_eq!(
        Core::new(
            flags.clone(),
            &[ChildSpec::worker("a"), ChildSpec::worker("a")]
        )
        .err(),
        Some(SpecError::DuplicateId { id: "a".into() })
    );
    assert_eq!(
        Core::new(
            flags.clone().auto_shutdown(AutoShutdown::AnySignificant),
            &[ChildSpec::worker("a").significant(true)]
        )
        .err(),
        Some(SpecError::SignificantPermanent { id: "a".into() })
    );
    assert_eq!(
        Core::new(SupFlags::new(Strategy::SimpleOneForOne), &[]).err(),
        Some(SpecError::SimpleOneForOneTemplate { count: 0 })
    );
    assert_eq!(
        Core::new(flags, &[ChildSpec::worker("")]).err(),
        Some(SpecError::EmptyId)
    );
}

/// The property test: random crash sequences against a reference model of the OTP rules.
mod model {
    use super::*;

    /// A deterministic pseudo-random source (xorshift), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[derive(Clone)]
    struct ModelChild {
        id: String,
        restart: Restart,
        significant: bool,
        alive: bool,
    }

    /// What the model says a supervisor does after an exit.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        Nothing,
        Restarted {
            stopped: Vec<String>,
            started: Vec<String>,
        },
        GaveUp,
        AutoShutdown,
    }

    /// The OTP rules written as plainly as possible, independently of `Core`.
    struct Model {
        strategy: Strategy,
        intensity: usize,
        period: f64,
        auto: AutoShutdown,
        children: Vec<ModelChild>,
        restarts: Vec<f64>,
    }

    impl Model {
        fn exit(&mut self, idx: usize, reason: &DownReason, now: f64) -> Outcome {
            let child = self.children[idx].clone();
            self.children[idx].alive = false;
            let normal = matches!(reason, DownReason::Normal | DownReason::Shutdown);
            let restart = match child.restart {
                Restart::Permanent => true,
                Restart::Transient => !normal,
                Restart::Temporary => false,
            };
            if !restart {
                if child.restart == Restart::Temporary {
                    self.children.remove(idx);
                }
                let ends = child.significant
                    && match self.auto {
                        AutoShutdown::Never => false,
                        AutoShutdown::AnySignificant => true,
                        AutoShutdown::AllSignificant => {
                            self.children.iter().all(|c| !c.significant || !c.alive)
                        }
                    };
                return if ends {
                    Outcome::AutoShutdown
                } else {
                    Outcome::Nothing
                };
            }
            self.restarts.push(now);
            let recent = self
                .restarts
                .iter()
                .filter(|&&t| now - t <= self.period + 1e-9)
                .count();
            if recent > self.intensity {
                return Outcome::GaveUp;
            }
            let (affected_from, others): (usize, Vec<usize>) = match self.strategy {
                Strategy::OneForAll => (0, (0..self.children.len()).collect()),
                Strategy::RestForOne => (idx, (idx..self.children.len()).collect()),
                _ => (idx, vec![idx]),
            };
            let _ = affected_from;
            let mut stopped = vec![];
            for &i in others.iter().rev() {
                if i != idx && self.children[i].alive {
                    stopped.push(self.children[i].id.clone());
                    self.children[i].alive = false;
                }
            }
            let affected: Vec<String> = others
                .iter()
                .map(|&i| self.children[i].id.clone())
                .collect();
            self.children.retain(|c| {
                c.alive || c.restart != Restart::Temporary || !affected.contains(&c.id)
            });
            let mut started = vec![];
            for c in self.children.iter_mut() {
                if affected.contains(&c.id) {
                    c.alive = true;
                    started.push(c.id.clone());
                }
            }
            Outcome::Restarted { stopped, started }
        }
    }

    #[test]
    fn random_crash_sequences_match_the_otp_model() {
        let mut rng = Rng(0x5eed_cafe_f00d_d00d);
        let strategies = [
            Strategy::OneForOne,
            Strategy::OneForAll,
            Strategy::RestForOne,
        ];
        let autos = [
            AutoShutdown::Never,
            AutoShutdown::AnySignificant,
            AutoShutdown::AllSignificant,
        ];
        for case in 0..2_000 {
            let strategy = strategies[rng.below(3)];
            let auto = autos[rng.below(3)];
            let intensity = rng.below(5) as u32;
            let period = 1 + rng.below(10) as u64;
            let n = 1 + rng.below(6);
            let mut specs = vec![];
            for k in 0..n {
                let restart =
                    [Restart::Permanent, Restart::Transient, Restart::Temporary][rng.below(3)];
                let significant = restart != Restart::Permanent
                    && auto != AutoShutdown::Never
                    && rng.below(2) == 0;
                specs.push(
                    ChildSpec::worker(format!("c{k}"))
                        .restart(restart)
                        .significant(significant),
                );
            }
            let flags = SupFlags::new(strategy)
                .intensity(intensity, Duration::from_secs(period))
                .auto_shutdown(auto);
            let (mut core, _) = started(flags, &specs);
            let mut model = Model {
                strategy,
                intensity: intensity as usize,
                period: period as f64,
                auto,
                children: specs
                    .iter()
                    .map(|s| ModelChild {
                        id: s.id.clone(),
                        restart: s.restart,
                        significant: s.significant,
                        alive: true,
                    })
                    .collect(),
                restarts: vec![],
            };
            let mut now_ms = 0u64;
            for step in 0..30 {
                let alive: Vec<usize> = (0..model.children.len())
                    .filter(|&i| model.children[i].alive)
                    .collect();
                if alive.is_empty() {
                    break;
                }
                let idx = alive[rng.below(alive.len())];
                let reason = [
                    DownReason::Normal,
                    DownReason::Shutdown,
                    DownReason::Error("x".into()),
                    DownReason::Killed,
                    DownReason::NodeDown,
                ][rng.below(5)]
                .clone();
                now_ms += rng.below(3000) as u64;
                let now = Duration::from_millis(now_ms);
                let id = model.children[idx].id.clone();
                let expected = model.exit(idx, &reason, now_ms as f64 / 1000.0);
                let decision = core.child_exited(instance(&core, &id), &reason, "x", now);
                let got = match &decision {
                    Decision::Nothing => Outcome::Nothing,
                    Decision::Restart { stop, .. } => {
                        let stopped = stop.clone();
                        let started = carry_out(&mut core, &decision);
                        Outcome::Restarted { stopped, started }
                    }
                    Decision::Shutdown { reason } if reason.contains("intensity") => {
                        Outcome::GaveUp
                    }
                    Decision::Shutdown { .. } => Outcome::AutoShutdown,
                    Decision::TryAgain { .. } => unreachable!("every start succeeds here"),
                };
                assert_eq!(
                    got, expected,
                    "case {case} step {step}: {strategy:?} {auto:?} {intensity}/{period}s, \
                     {id} exited {reason:?}"
                );
                if !matches!(got, Outcome::Nothing | Outcome::Restarted { .. }) {
                    break;
                }
                let alive_core: Vec<&str> = core
                    .children()
                    .filter(|e| e.state == ChildState::Running)
                    .map(|e| e.spec.id.as_str())
                    .collect();
                let alive_model: Vec<&str> = model
                    .children
                    .iter()
                    .filter(|c| c.alive)
                    .map(|c| c.id.as_str())
                    .collect();
                assert_eq!(alive_core, alive_model, "case {case} step {step}");
            }
        }
    }
}
