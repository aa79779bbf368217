//! `atomrl report RUN_DIR`: curves of a run's metrics as SVG files in `RUN_DIR/plots/`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plotters::prelude::*;

use super::log::read;
use super::Metrics;

/// One figure: a title, a file name, and which metric names go on it.
struct Figure {
    title: &'static str,
    file: &'static str,
    select: fn(&str) -> bool,
}

const FIGURES: &[Figure] = &[
    Figure { title: "reward per skill", file: "reward.svg", select: |k| k.starts_with("reward/") && k.ends_with("/mean") },
    Figure { title: "held-out evaluation", file: "eval.svg", select: |k| k.starts_with("eval/") },
    Figure { title: "KL to the reference / rollout policy", file: "kl.svg", select: |k| k == "kl" || k == "rollout/logprob_mismatch" },
    Figure { title: "entropy", file: "entropy.svg", select: |k| k == "entropy" },
    Figure { title: "response length", file: "length.svg", select: |k| k.starts_with("response_length/") && !k.ends_with("clip_ratio") },
];

const COLORS: [RGBColor; 8] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40), RGBColor(148, 103, 189), RGBColor(140, 86, 75), RGBColor(227, 119, 194), RGBColor(127, 127, 127)];

/// Writes one SVG per figure that has data; returns their paths.
pub fn render(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let rows = read(run_dir)?;
    if rows.is_empty() {
        bail!("{} has no metrics yet", run_dir.join("metrics.jsonl").display());
    }
    let out_dir = run_dir.join("plots");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut written = Vec::new();
    for fig in FIGURES {
        let mut names: Vec<&String> = rows.iter().flat_map(|(_, m)| m.keys()).filter(|k| (fig.select)(k)).collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            continue;
        }
        let path = out_dir.join(fig.file);
        plot(&path, fig.title, &names, &rows).with_context(|| format!("plotting {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn plot(path: &Path, title: &str, names: &[&String], rows: &[(u64, Metrics)]) -> Result<()> {
    let series: Vec<Vec<(f64, f64)>> = names.iter().map(|n| rows.iter().filter_map(|(s, m)| m.get(*n).map(|v| (*s as f64, *v))).collect()).collect();
    let all = series.iter().flatten();
    let (x0, x1) = all.clone().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = all.fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart.configure_mesh().x_desc("step").draw().map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, (name, pts)) in names.iter().zip(series).enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
