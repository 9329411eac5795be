//! The table of figures, ours against Node's with the budget, its JSON, and its chart.

use std::path::Path;

use ringleader_benches::chart::{self, Ratio};
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Better {
    Higher,
    Lower,
}

pub(crate) struct Row {
    pub(crate) label: String,
    pub(crate) ours: f64,
    pub(crate) node: Option<f64>,
    pub(crate) better: Better,
    /// The budget, as a factor in our favour (2.5 = "2.5x Node's"; 10 = "a tenth of").
    pub(crate) target: Option<f64>,
    /// A budget on our figure alone (at most this).
    pub(crate) at_most: Option<f64>,
}

impl Row {
    pub(crate) fn new(
        label: &str,
        ours: f64,
        node: Option<f64>,
        better: Better,
        target: Option<f64>,
    ) -> Row {
        Row {
            label: label.to_owned(),
            ours,
            node,
            better,
            target,
            at_most: None,
        }
    }

    pub(crate) fn at_most(mut self, limit: f64) -> Row {
        self.at_most = Some(limit);
        self
    }

    pub(crate) fn met(&self) -> Option<bool> {
        match (self.target, self.advantage(), self.at_most) {
            (_, _, Some(limit)) => Some(self.ours <= limit),
            (Some(t), Some(a), None) => Some(a >= t),
            _ => None,
        }
    }

    /// How many times better we are (>1 is better, whichever direction is better).
    pub(crate) fn advantage(&self) -> Option<f64> {
        let node = self.node?;
        Some(match self.better {
            Better::Higher => self.ours / node,
            Better::Lower => node / self.ours,
        })
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "metric": self.label, "ringleader": self.ours, "node": self.node,
            "advantage": self.advantage(), "target": self.target, "at_most": self.at_most,
            "better": if self.better == Better::Higher { "higher" } else { "lower" },
            "met": self.met(),
        })
    }
}

pub(crate) fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<46} {:>14} {:>14} {:>9} {:>12}",
        "metric", "ringleader", "Node.js", "ours is", "budget"
    );
    for r in rows {
        let node = r.node.map_or("-".to_owned(), |n| format!("{n:.2}"));
        let adv = r.advantage().map_or("-".to_owned(), |a| format!("{a:.2}x"));
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        let budget = match (r.target, r.at_most, r.met()) {
            (_, Some(limit), Some(ok)) => format!("<={limit} {}", verdict(ok)),
            (Some(t), _, Some(ok)) => format!("{t}x {}", verdict(ok)),
            (Some(t), _, None) => format!("{t}x ?"),
            _ => String::new(),
        };
        println!(
            "{:<46} {:>14.2} {:>14} {:>9} {:>12}",
            r.label, r.ours, node, adv, budget
        );
    }
    println!(
        "(\"ours is\": how many times better ringleader is; for times and sizes, Node's / ours)"
    );
}

/// `--plot FILE`: redraws `ratios.svg` next to a `compare.json` without measuring again.
pub(crate) fn replot(path: &Path) {
    let v: Value = serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("json");
    let rows: Vec<Row> = v["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let mut row = Row::new(
                r["metric"].as_str().unwrap_or(""),
                r["ringleader"].as_f64().unwrap_or(f64::NAN),
                r["node"].as_f64(),
                if r["better"] == "lower" {
                    Better::Lower
                } else {
                    Better::Higher
                },
                r["target"].as_f64(),
            );
            row.at_most = r["at_most"].as_f64();
            row
        })
        .collect();
    let out = path.with_file_name("ratios.svg");
    ratios_chart(&rows, &out);
    println!("wrote {}", out.display());
}

/// The rows with a ratio against Node, as bars in `path` (the load client's CPU is a
/// diagnostic, not a result, and is left out).
pub(crate) fn ratios_chart(rows: &[Row], path: &Path) {
    let bars: Vec<Ratio> = rows
        .iter()
        .filter(|r| !r.label.starts_with("load client"))
        .filter_map(|r| {
            Some(Ratio {
                label: r.label.clone(),
                ratio: r.advantage()?,
                target: r.target,
                met: r.met(),
            })
        })
        .collect();
    let title =
        "how many times better ringleader is than Node's cluster (log scale; ticks: the budget)";
    chart::ratio_bars(path, title, &bars).expect("write the chart");
}
