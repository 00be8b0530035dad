//! Figures and the table they make.

use serde::Serialize;

/// What a figure must reach, as a ratio troupe / baseline, or as an absolute bound.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Goal {
    /// The ratio must be at least this.
    RatioAtLeast(f64),
    /// The ratio must be at most this.
    RatioAtMost(f64),
    /// troupe's figure itself must be at most this (in its unit): a bound the goals set
    /// outright, where the baseline is given for reference.
    AtMost(f64),
    /// troupe's figure itself must be at least this (in its unit).
    AtLeast(f64),
}

impl Goal {
    fn met(self, ratio: f64, troupe: f64) -> bool {
        match self {
            Goal::RatioAtLeast(g) => ratio >= g,
            Goal::RatioAtMost(g) => ratio <= g,
            Goal::AtMost(g) => troupe <= g,
            Goal::AtLeast(g) => troupe >= g,
        }
    }

    fn text(self, unit: &str) -> String {
        match self {
            Goal::RatioAtLeast(g) => format!(">= {g}"),
            Goal::RatioAtMost(g) => format!("<= {g}"),
            Goal::AtMost(g) => format!("<= {g} {unit}"),
            Goal::AtLeast(g) => format!(">= {g} {unit}"),
        }
    }
}

/// One measured figure beside its baseline.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    /// The measure's name.
    pub(crate) name: String,
    /// troupe's figure.
    pub(crate) troupe: f64,
    /// The baseline's figure, measured in the same run.
    pub(crate) baseline: f64,
    /// The unit of both.
    pub(crate) unit: String,
    /// troupe / baseline.
    pub(crate) ratio: f64,
    /// The goal.
    pub(crate) goal: Goal,
    /// Whether the goal is met.
    pub(crate) pass: bool,
    /// What the reader should know (repetitions, what the baseline does).
    pub(crate) note: String,
}

impl Figure {
    pub(crate) fn new(
        name: &str,
        troupe: f64,
        baseline: f64,
        unit: &str,
        goal: Goal,
        note: impl Into<String>,
    ) -> Figure {
        let ratio = if baseline > 0.0 {
            troupe / baseline
        } else {
            f64::NAN
        };
        Figure {
            name: name.into(),
            troupe,
            baseline,
            unit: unit.into(),
            ratio,
            goal,
            pass: goal.met(ratio, troupe),
            note: note.into(),
        }
    }
}

/// A measure that could not run here, and why.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Skipped {
    /// The measure.
    pub(crate) name: String,
    /// Why.
    pub(crate) why: String,
}

/// Everything one run measured.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    /// The machine it ran on.
    pub(crate) machine: String,
    /// Whether it was a quick run.
    pub(crate) quick: bool,
    /// The figures.
    pub(crate) figures: Vec<Figure>,
    /// The measures that did not run.
    pub(crate) skipped: Vec<Skipped>,
}

fn num(x: f64) -> String {
    if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

impl Report {
    /// The table, as printed.
    pub(crate) fn table(&self) -> String {
        let mut rows = vec![[
            "figure".to_string(),
            "troupe".into(),
            "baseline".into(),
            "unit".into(),
            "ratio".into(),
            "goal".into(),
            "result".into(),
        ]];
        for f in &self.figures {
            rows.push([
                f.name.clone(),
                num(f.troupe),
                num(f.baseline),
                f.unit.clone(),
                // Small ratios keep their first significant digits.
                if f.ratio.abs() >= 0.01 || f.ratio == 0.0 {
                    format!("{:.2}", f.ratio)
                } else {
                    format!("{:.1e}", f.ratio)
                },
                f.goal.text(&f.unit),
                if f.pass { "pass" } else { "FAIL" }.into(),
            ]);
        }
        let widths: Vec<usize> = (0..7)
            .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
            .collect();
        let mut out = format!("machine: {}\n\n", self.machine);
        for (n, row) in rows.iter().enumerate() {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
            if n == 0 {
                out.push_str(
                    &widths
                        .iter()
                        .map(|w| "-".repeat(*w))
                        .collect::<Vec<_>>()
                        .join("  "),
                );
                out.push('\n');
            }
        }
        for f in &self.figures {
            out.push_str(&format!("\n{}: {}", f.name, f.note));
        }
        for s in &self.skipped {
            out.push_str(&format!("\n{} (skipped): {}", s.name, s.why));
        }
        out.push('\n');
        out
    }
}
