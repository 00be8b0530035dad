//! Tab completion at the REPL's prompt: command names (the REPL's own and every `troupe`
//! subcommand, from the one clap definition), actor paths for the commands that take one,
//! and task ids for the task commands. Paths come from the live tree, refreshed after every
//! command; completion itself never waits on the network.

use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

/// What completion knows; the session keeps it current.
#[derive(Debug, Default)]
pub(crate) struct Known {
    /// Every command name.
    pub(crate) commands: Vec<String>,
    /// Commands whose first argument is an actor path.
    pub(crate) path_commands: Vec<&'static str>,
    /// Commands whose first argument is a task id.
    pub(crate) task_commands: Vec<&'static str>,
    /// Actor paths in the live tree.
    pub(crate) paths: Vec<String>,
}

/// The rustyline helper.
pub(crate) struct ReplHelper {
    pub(crate) known: Arc<Mutex<Known>>,
}

impl ReplHelper {
    fn candidates(&self, line: &str) -> (usize, Vec<String>) {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let start = line
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = &line[start..];
        let before: Vec<&str> = line[..start].split_whitespace().collect();
        let mut out: Vec<String> = Vec::new();
        match before.as_slice() {
            [] => out.extend(
                known
                    .commands
                    .iter()
                    .filter(|c| c.starts_with(word))
                    .cloned(),
            ),
            [command] => {
                if known.path_commands.contains(command) {
                    out.extend(known.paths.iter().filter(|p| p.starts_with(word)).cloned());
                }
                if known.task_commands.contains(command) {
                    out.extend(
                        known
                            .paths
                            .iter()
                            .filter_map(|p| p.strip_prefix("task/"))
                            .filter(|t| t.starts_with(word))
                            .map(str::to_string),
                    );
                }
            }
            _ => {}
        }
        out.sort();
        out.dedup();
        (start, out)
    }
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, words) = self.candidates(&line[..pos]);
        let single = words.len() == 1;
        Ok((
            start,
            words
                .into_iter()
                .map(|w| Pair {
                    display: w.clone(),
                    // A lone candidate is complete: the next word can follow at once.
                    replacement: if single { format!("{w} ") } else { w },
                })
                .collect(),
        ))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {}

impl Validator for ReplHelper {}

impl Helper for ReplHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper() -> ReplHelper {
        ReplHelper {
            known: Arc::new(Mutex::new(Known {
                commands: vec!["info".into(), "inspect".into(), "ps".into()],
                path_commands: vec!["info"],
                task_commands: vec!["logs"],
                paths: vec![
                    "master".into(),
                    "master/allocator".into(),
                    "task/sleep-1".into(),
                ],
            })),
        }
    }

    #[test]
    fn completes_commands_paths_and_tasks() {
        let h = helper();
        assert_eq!(
            h.candidates("in"),
            (0, vec!["info".into(), "inspect".into()])
        );
        assert_eq!(
            h.candidates("info master/al"),
            (5, vec!["master/allocator".into()])
        );
        assert_eq!(h.candidates("logs sl"), (5, vec!["sleep-1".into()]));
        assert_eq!(h.candidates("ps x"), (3, Vec::<String>::new()));
        // A wide space is a separator too, and no char boundary is split.
        assert_eq!(
            h.candidates("info\u{a0}master/al"),
            (6, vec!["master/allocator".into()])
        );
    }
}
