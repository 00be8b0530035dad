//! Reading a spec file: every problem at once, each with its file, line and column and a
//! message that names it (an unknown key with the key it was probably meant to be, a wrong
//! type, a duplicate id, an unknown strategy, a bad placement, resources no agent can ever
//! hold). A file with any problem gives no spec: a spec is applied whole or not at all.
//!
//! The walk below reads the file's own tree (every key and value with its place in the
//! text) against the keys the format has; only a file it finds nothing wrong with is then
//! read into [`Spec`] by serde, the same types the builder makes.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};
use troupe_actors::processes::{Constraint, Placement};
use troupe_actors::protocol::{AgentId, AgentInfo, Resources};

use crate::format::{Shutdown, Spec, parse_duration};

/// One problem of a spec file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1, in characters.
    pub column: usize,
    /// What is wrong, naming the key or value.
    pub message: String,
}

/// Why a spec file was refused: every problem found, in the order of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{}", self.render())]
pub struct Invalid {
    /// The file's name, as given.
    pub file: String,
    /// The problems, by place.
    pub problems: Vec<Problem>,
}

impl Invalid {
    /// One line per problem: `FILE:LINE:COLUMN: MESSAGE`.
    pub fn render(&self) -> String {
        self.problems
            .iter()
            .map(|p| format!("{}:{}:{}: {}", self.file, p.line, p.column, p.message))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The most replicas a child may ask for.
pub const MAX_REPLICAS: i64 = 1_000;

/// The most ports a child may ask for.
pub const MAX_PORTS: i64 = 100;

/// The keys of the top of a spec.
const SPEC_KEYS: &[&str] = &[
    "name",
    "strategy",
    "intensity",
    "period",
    "auto_shutdown",
    "children",
];

/// The keys of a supervisor child.
const SUPERVISOR_KEYS: &[&str] = &[
    "id",
    "strategy",
    "intensity",
    "period",
    "auto_shutdown",
    "restart",
    "significant",
    "children",
];

/// The keys of a process child.
const PROCESS_KEYS: &[&str] = &[
    "id",
    "command",
    "args",
    "env",
    "dir",
    "stdin",
    "resources",
    "placement",
    "agent",
    "restart",
    "shutdown",
    "significant",
    "replicas",
];

/// The keys of a process child's `resources`.
const RESOURCE_KEYS: &[&str] = &["cpus", "mem", "disk", "ports"];

/// Reads a spec file. `agents` are the cluster's agents, to refuse what none could ever
/// hold or place; with none given, that check is left to the spawn.
pub fn read(text: &str, file: &str, agents: &[AgentInfo]) -> Result<Spec, Invalid> {
    let mut walk = Walk {
        text,
        problems: Vec::new(),
        agents,
    };
    let (doc, syntax) = DeTable::parse_recoverable(text);
    for error in &syntax {
        let at = error.span().map(|s| s.start).unwrap_or(0);
        walk.problem(at..at, error.message().trim().to_string());
    }
    if syntax.is_empty() {
        walk.spec(doc.get_ref(), doc.span());
    }
    if !walk.problems.is_empty() {
        return Err(walk.refusal(file));
    }
    toml::from_str::<Spec>(text).map_err(|e| {
        let at = e.span().map(|s| s.start).unwrap_or(0);
        walk.problem(at..at, e.message().trim().to_string());
        walk.refusal(file)
    })
}

struct Walk<'t, 'a> {
    text: &'t str,
    problems: Vec<(usize, Problem)>,
    agents: &'a [AgentInfo],
}

/// A key and its value, as the file has them.
type Entry<'e, 'i> = (&'e Spanned<DeString<'i>>, &'e Spanned<DeValue<'i>>);

impl Walk<'_, '_> {
    fn refusal(&mut self, file: &str) -> Invalid {
        self.problems.sort_by_key(|(at, _)| *at);
        self.problems.dedup();
        Invalid {
            file: file.to_string(),
            problems: self.problems.drain(..).map(|(_, p)| p).collect(),
        }
    }

    fn problem(&mut self, span: Range<usize>, message: String) {
        let at = span.start.min(self.text.len());
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit_once('\n')
            .map_or(before, |(_, l)| l)
            .chars()
            .count()
            + 1;
        self.problems.push((
            at,
            Problem {
                line,
                column,
                message,
            },
        ));
    }

    /// Unknown keys of a table, each with the known key it is closest to.
    fn unknown_keys(&mut self, table: &DeTable<'_>, known: &[&str], what: &str) {
        for key in table.keys() {
            let name = key.get_ref().as_ref();
            if known.contains(&name) {
                continue;
            }
            let hint = closest(name, known)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_else(|| format!(" (it has: {})", known.join(", ")));
            self.problem(key.span(), format!("unknown key `{name}` in {what}{hint}"));
        }
    }

    fn entry<'e, 'i>(table: &'e DeTable<'i>, key: &str) -> Option<Entry<'e, 'i>> {
        table.get_key_value(key)
    }

    fn string(&mut self, table: &DeTable<'_>, key: &str, what: &str) -> Option<String> {
        let (_, value) = Self::entry(table, key)?;
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.wrong_type(value.span(), key, what, "a string", other);
                None
            }
        }
    }

    fn wrong_type(
        &mut self,
        span: Range<usize>,
        key: &str,
        what: &str,
        wanted: &str,
        found: &DeValue<'_>,
    ) {
        self.problem(
            span,
            format!(
                "`{key}` of {what} must be {wanted}, not {}",
                found.type_str()
            ),
        );
    }

    fn integer(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        what: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let (_, value) = Self::entry(table, key)?;
        let DeValue::Integer(n) = value.get_ref() else {
            self.wrong_type(value.span(), key, what, "a whole number", value.get_ref());
            return None;
        };
        match i64::from_str_radix(&n.as_str().replace('_', ""), n.radix()) {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                self.problem(
                    value.span(),
                    format!(
                        "`{key}` of {what} must be from {} to {}, not {}",
                        range.start(),
                        range.end(),
                        n.as_str()
                    ),
                );
                None
            }
        }
    }

    fn number(&mut self, table: &DeTable<'_>, key: &str, what: &str, zero_ok: bool) -> Option<f64> {
        let (_, value) = Self::entry(table, key)?;
        let n = match value.get_ref() {
            DeValue::Integer(n) => i64::from_str_radix(&n.as_str().replace('_', ""), n.radix())
                .ok()
                .map(|n| n as f64),
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            other => {
                self.wrong_type(value.span(), key, what, "a number", other);
                return None;
            }
        };
        match n {
            Some(n) if n.is_finite() && (n > 0.0 || (zero_ok && n == 0.0)) && n <= 1e12 => Some(n),
            _ => {
                let least = if zero_ok { "0 or more" } else { "more than 0" };
                self.problem(
                    value.span(),
                    format!("`{key}` of {what} must be a finite number, {least}"),
                );
                None
            }
        }
    }

    fn boolean(&mut self, table: &DeTable<'_>, key: &str, what: &str) -> Option<bool> {
        let (_, value) = Self::entry(table, key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.wrong_type(value.span(), key, what, "true or false", other);
                None
            }
        }
    }

    /// A string that must be one of `choices`.
    fn choice(&mut self, table: &DeTable<'_>, key: &str, what: &str, choices: &[&str]) {
        let Some(text) = self.string(table, key, what) else {
            return;
        };
        if choices.contains(&text.as_str()) {
            return;
        }
        let span = Self::entry(table, key).map_or(0..0, |(_, v)| v.span());
        let hint = closest(&text, choices)
            .map(|c| format!("; did you mean \"{c}\"?"))
            .unwrap_or_default();
        let extra = if key == "strategy" && text == "simple_one_for_one" {
            " (a spec's children are named: spawn dynamic ones through the process service)"
        } else {
            ""
        };
        self.problem(
            span,
            format!(
                "unknown {key} \"{text}\" in {what}{extra}: it is one of {}{hint}",
                choices.join(", ")
            ),
        );
    }

    fn duration(&mut self, table: &DeTable<'_>, key: &str, what: &str) {
        let Some(text) = self.string(table, key, what) else {
            return;
        };
        if let Err(why) = parse_duration(&text) {
            let span = Self::entry(table, key).map_or(0..0, |(_, v)| v.span());
            self.problem(span, format!("`{key}` of {what}: {why}"));
        }
    }

    fn name(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        what: &str,
        span: Range<usize>,
    ) -> Option<String> {
        let Some((_, value)) = Self::entry(table, key) else {
            self.problem(span, format!("{what} has no `{key}`"));
            return None;
        };
        let name = self.string(table, key, what)?;
        let good = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !good {
            self.problem(
                value.span(),
                format!("`{key}` \"{name}\" of {what} must be 1 to 64 letters, digits, `-` or `_`"),
            );
            return None;
        }
        Some(name)
    }

    /// The flags every supervisor has.
    fn supervisor_flags(&mut self, table: &DeTable<'_>, what: &str) -> bool {
        self.choice(
            table,
            "strategy",
            what,
            &["one_for_one", "one_for_all", "rest_for_one"],
        );
        self.integer(table, "intensity", what, 0..=1_000_000);
        self.duration(table, "period", what);
        self.choice(
            table,
            "auto_shutdown",
            what,
            &["never", "any_significant", "all_significant"],
        );
        self.string(table, "auto_shutdown", what)
            .is_some_and(|a| a != "never")
    }

    fn spec(&mut self, doc: &DeTable<'_>, span: Range<usize>) {
        let what = "the spec";
        self.unknown_keys(doc, SPEC_KEYS, what);
        self.name(doc, "name", what, span.start..span.start);
        let auto = self.supervisor_flags(doc, what);
        self.children(doc, what, auto, span);
    }

    /// The `children` of a supervisor table: each a process or a supervisor, ids unique.
    fn children(
        &mut self,
        table: &DeTable<'_>,
        what: &str,
        auto_shutdown: bool,
        span: Range<usize>,
    ) {
        let Some((_, value)) = Self::entry(table, "children") else {
            self.problem(
                span.start..span.start,
                format!("{what} has no `children` (add at least one [[children]] table)"),
            );
            return;
        };
        let DeValue::Array(children) = value.get_ref() else {
            self.wrong_type(
                value.span(),
                "children",
                what,
                "an array of tables ([[children]])",
                value.get_ref(),
            );
            return;
        };
        if children.is_empty() {
            self.problem(
                value.span(),
                format!("`children` of {what} is empty: a supervisor needs at least one child"),
            );
        }
        let mut ids: BTreeMap<String, Range<usize>> = BTreeMap::new();
        for child in children.iter() {
            let DeValue::Table(t) = child.get_ref() else {
                self.wrong_type(
                    child.span(),
                    "children",
                    what,
                    "tables ([[children]])",
                    child.get_ref(),
                );
                continue;
            };
            let names = self.child(t, child.span(), auto_shutdown);
            let id_span = Self::entry(t, "id").map_or(child.span(), |(_, v)| v.span());
            for name in names {
                if ids.insert(name.clone(), id_span.clone()).is_some() {
                    self.problem(
                        id_span.clone(),
                        format!(
                            "duplicate child id \"{name}\" in {what}: ids of siblings are unique"
                        ),
                    );
                }
            }
        }
    }

    /// One child: the ids it makes (with replicas, `ID-0`...).
    fn child(&mut self, t: &DeTable<'_>, span: Range<usize>, parent_auto: bool) -> Vec<String> {
        let id = self.name(t, "id", "a child", span.clone());
        let what = match &id {
            Some(id) => format!("child \"{id}\""),
            None => "a child".to_string(),
        };
        let significant = self.boolean(t, "significant", &what).unwrap_or(false);
        if significant && !parent_auto {
            let at = Self::entry(t, "significant").map_or(span.clone(), |(_, v)| v.span());
            self.problem(at, format!("{what} is significant, but its supervisor's `auto_shutdown` is \"never\" (OTP refuses it too)"));
        }
        self.choice(
            t,
            "restart",
            &what,
            &["permanent", "transient", "temporary"],
        );
        let (has_children, has_command) = (t.contains_key("children"), t.contains_key("command"));
        match (has_children, has_command) {
            (true, true) => {
                let at = Self::entry(t, "command").map_or(span.clone(), |(k, _)| k.span());
                self.problem(at, format!("{what} has both `command` (a process) and `children` (a supervisor): it is one or the other"));
                id.into_iter().collect()
            }
            (false, false) => {
                let every: Vec<&str> = PROCESS_KEYS
                    .iter()
                    .chain(SUPERVISOR_KEYS)
                    .copied()
                    .collect();
                self.unknown_keys(t, &every, &what);
                self.problem(
                    span.start..span.start,
                    format!(
                        "{what} has neither `command` (a process) nor `children` (a supervisor)"
                    ),
                );
                id.into_iter().collect()
            }
            (true, false) => {
                self.unknown_keys(t, SUPERVISOR_KEYS, &what);
                let auto = self.supervisor_flags(t, &what);
                self.children(t, &what, auto, span);
                id.into_iter().collect()
            }
            (false, true) => {
                self.unknown_keys(t, PROCESS_KEYS, &what);
                self.process(t, &what, span);
                let replicas = self
                    .integer(t, "replicas", &what, 1..=MAX_REPLICAS)
                    .unwrap_or(1);
                match id {
                    Some(id) if replicas > 1 => {
                        (0..replicas).map(|n| format!("{id}-{n}")).collect()
                    }
                    Some(id) => vec![id],
                    None => Vec::new(),
                }
            }
        }
    }

    fn process(&mut self, t: &DeTable<'_>, what: &str, span: Range<usize>) {
        if let Some(command) = self.string(t, "command", what)
            && command.trim().is_empty()
        {
            let at = Self::entry(t, "command").map_or(span.clone(), |(_, v)| v.span());
            self.problem(at, format!("`command` of {what} is empty"));
        }
        self.strings(t, "args", what);
        if let Some((_, value)) = Self::entry(t, "env") {
            match value.get_ref() {
                DeValue::Table(env) => {
                    for (k, v) in env.iter() {
                        if !v.get_ref().is_str() {
                            let key = format!("env.{}", k.get_ref());
                            self.wrong_type(v.span(), &key, what, "a string", v.get_ref());
                        }
                    }
                }
                other => self.wrong_type(value.span(), "env", what, "a table of strings", other),
            }
        }
        self.string(t, "dir", what);
        self.choice(t, "stdin", what, &["null", "pipe"]);
        if let Some(text) = self.string(t, "shutdown", what)
            && let Err(why) = Shutdown::parse(&text)
        {
            let at = Self::entry(t, "shutdown").map_or(span.clone(), |(_, v)| v.span());
            self.problem(at, format!("`shutdown` of {what}: {why}"));
        }
        let needs = self.resources(t, what);
        let placement = self.placement(t, what);
        if let (Some(needs), Some(placement)) = (needs, placement) {
            let at = Self::entry(t, "resources")
                .or_else(|| Self::entry(t, "placement"))
                .or_else(|| Self::entry(t, "agent"))
                .map_or(span.start..span.start, |(k, _)| k.span());
            if let Some(why) = self.never_fits(&needs, &placement) {
                self.problem(at, format!("{what}: {why}"));
            }
        }
    }

    fn strings(&mut self, t: &DeTable<'_>, key: &str, what: &str) -> Option<Vec<String>> {
        let (_, value) = Self::entry(t, key)?;
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(
                value.span(),
                key,
                what,
                "an array of strings",
                value.get_ref(),
            );
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(s.to_string()),
                other => {
                    let found = other.type_str();
                    self.problem(
                        item.span(),
                        format!("`{key}` of {what} must hold strings only, not a {found}"),
                    );
                }
            }
        }
        Some(out)
    }

    fn resources(&mut self, t: &DeTable<'_>, what: &str) -> Option<Resources> {
        let Some((_, value)) = Self::entry(t, "resources") else {
            return Some(Resources::new(0.1, 64.0));
        };
        let DeValue::Table(r) = value.get_ref() else {
            self.wrong_type(
                value.span(),
                "resources",
                what,
                "a table such as { cpus = 0.5, mem = 128 }",
                value.get_ref(),
            );
            return None;
        };
        let what = format!("the resources of {what}");
        self.unknown_keys(r, RESOURCE_KEYS, &what);
        let before = self.problems.len();
        let cpus = self.number(r, "cpus", &what, false).unwrap_or(0.1);
        let mem = self.number(r, "mem", &what, false).unwrap_or(64.0);
        let disk = self.number(r, "disk", &what, true).unwrap_or(0.0);
        self.integer(r, "ports", &what, 0..=MAX_PORTS);
        (self.problems.len() == before).then_some(Resources {
            cpus,
            mem_mib: mem,
            disk_mib: disk,
        })
    }

    fn placement(&mut self, t: &DeTable<'_>, what: &str) -> Option<Placement> {
        let mut constraints = Vec::new();
        let mut good = true;
        if let Some((_, value)) = Self::entry(t, "placement") {
            match value.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        match item.get_ref() {
                            DeValue::String(s) => match Constraint::parse(s) {
                                Ok(c) => constraints.push(c),
                                Err(why) => {
                                    good = false;
                                    self.problem(
                                        item.span(),
                                        format!("bad placement of {what}: {why}"),
                                    );
                                }
                            },
                            other => {
                                good = false;
                                let found = other.type_str();
                                self.problem(item.span(), format!("`placement` of {what} must hold strings such as \"rack = r1\", not a {found}"));
                            }
                        }
                    }
                }
                other => {
                    good = false;
                    self.wrong_type(
                        value.span(),
                        "placement",
                        what,
                        "an array of strings such as [\"rack = r1\"]",
                        other,
                    );
                }
            }
        }
        let agent = self.string(t, "agent", what);
        if agent.is_some() && !constraints.is_empty() {
            let at = Self::entry(t, "agent").map_or(0..0, |(k, _)| k.span());
            self.problem(at, format!("{what} has both `agent` and `placement`: name one agent, or constrain, not both"));
            return None;
        }
        if !good {
            return None;
        }
        Some(match agent {
            Some(agent) => Placement::Agent(AgentId(agent)),
            None if constraints.is_empty() => Placement::Any,
            None => Placement::Constraints(constraints),
        })
    }

    /// Why no agent of the cluster could ever hold or place it, if none could.
    fn never_fits(&self, needs: &Resources, placement: &Placement) -> Option<String> {
        if self.agents.is_empty() {
            return None;
        }
        let places: Vec<&AgentInfo> = self
            .agents
            .iter()
            .filter(|a| placement.allows_agent(&a.id, &a.hostname, &a.attributes))
            .collect();
        if places.is_empty() {
            return Some(match placement {
                Placement::Agent(id) => format!("no agent {id} is registered"),
                _ => "no agent meets its placement".to_string(),
            });
        }
        if places.iter().any(|a| a.resources.contains(needs)) {
            return None;
        }
        let biggest = places
            .iter()
            .map(|a| a.resources)
            .fold(Resources::ZERO, |m, r| Resources {
                cpus: m.cpus.max(r.cpus),
                mem_mib: m.mem_mib.max(r.mem_mib),
                disk_mib: m.disk_mib.max(r.disk_mib),
            });
        Some(format!(
            "it needs {needs}, and no agent it may run on can ever hold that (the largest have {biggest})"
        ))
    }
}

/// The known word closest to `word`, if one is close (a typo, a different case, a prefix).
fn closest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = word.to_lowercase();
    known
        .iter()
        .map(|k| (distance(&lower, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3) || k.starts_with(&lower) || lower.starts_with(k))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}
