//! What a run reports: `metrics.jsonl` (one object per step, names as verl/TRL users know them),
//! the console progress line, and `atomrl report`'s plots.

mod log;
mod progress;
pub mod report;

pub use log::MetricsLog;
pub use progress::Progress;

/// One step's metrics by name, in insertion order of a sorted map (stable output).
pub type Metrics = std::collections::BTreeMap<String, f64>;
