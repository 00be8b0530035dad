//! The text form of the master's messages, for the REPL's `send master ...` and
//! `call master ...`: the operator's view of the books, and the operator's levers.

use troupe_runtime::text::{Parsed, TextProtocol};

use crate::protocol::{ClusterState, FrameworkId, KillAccepted, MasterMsg, TaskId, TaskLocation};

fn json<T: serde::Serialize>(value: T) -> Result<String, String> {
    serde_json::to_string_pretty(&value).map_err(|e| e.to_string())
}

impl TextProtocol for MasterMsg {
    const COMMANDS: &'static [(&'static str, &'static str)] = &[
        (
            "state [all]",
            "agents, frameworks, tasks (all: ended ones too), offers",
        ),
        ("locate TASK", "the task and the agent it runs on"),
        (
            "kill TASK",
            "kills the task: its stop signal, its grace period, then SIGKILL",
        ),
        ("revive FRAMEWORK", "the framework wants offers again"),
        (
            "suppress FRAMEWORK",
            "the framework wants no offers for now",
        ),
        (
            "teardown FRAMEWORK",
            "removes the framework for good; its tasks are killed",
        ),
    ];

    fn parse(words: &[&str], _call: bool) -> Result<Parsed<MasterMsg>, String> {
        match words {
            ["state"] | ["state", "all"] => {
                let all = words.len() == 2;
                Ok(Parsed::call(
                    |reply| MasterMsg::State { all, reply },
                    json::<ClusterState>,
                ))
            }
            ["locate", task] => {
                let task = TaskId::from(*task);
                Ok(Parsed::call(
                    |reply| MasterMsg::Locate { task, reply },
                    |found: Result<TaskLocation, crate::protocol::TaskRefused>| {
                        found.map_err(|e| e.to_string()).and_then(json)
                    },
                ))
            }
            ["kill", task] => {
                let task = TaskId::from(*task);
                Ok(Parsed::call(
                    |reply| MasterMsg::Kill {
                        task,
                        grace: None,
                        reply,
                    },
                    |done: Result<KillAccepted, crate::protocol::TaskRefused>| {
                        done.map_err(|e| e.to_string()).map(|how| match how {
                            KillAccepted::Sent => "killing".to_string(),
                            KillAccepted::Deferred => {
                                "its agent is unreachable: killed when it comes back".to_string()
                            }
                        })
                    },
                ))
            }
            ["revive", framework] => Ok(Parsed::Cast(MasterMsg::Revive {
                framework: FrameworkId::from(*framework),
            })),
            ["suppress", framework] => Ok(Parsed::Cast(MasterMsg::Suppress {
                framework: FrameworkId::from(*framework),
            })),
            ["teardown", framework] => Ok(Parsed::Cast(MasterMsg::Teardown {
                framework: FrameworkId::from(*framework),
            })),
            [command, ..] => Err(format!(
                "the master does not take {command:?} with these arguments: try `help`"
            )),
            [] => Err("no command".into()),
        }
    }
}
