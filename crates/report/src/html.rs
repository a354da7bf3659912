//! The page: one HTML file with its CSS inline and its charts as inline SVG, nothing fetched.
//! Every text that comes from the run (names, params, errors, metric names) goes through
//! [`esc`]; plotters escapes the texts it draws itself.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use leo_plugin::StageContext;

use crate::charts::{self, format_value, Series};
use crate::data::{ReportData, LOSS_METRICS};
use crate::lineage;

const CSS: &str = r#"
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1180px; color: #1d2330; padding: 0 16px; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #d5d9e0; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0; } td, th { border: 1px solid #d5d9e0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f4f7; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.facts th { width: 150px; } code, pre { font: 12px ui-monospace, monospace; } pre { white-space: pre-wrap; margin: 4px 0; }
.status-succeeded { color: #17733a; } .status-cached { color: #1f5fa8; } .status-failed, .status-lost, .status-cancelled { color: #b3261e; font-weight: 600; }
.status-skipped, .status-pending { color: #6b7280; } .status-running { color: #a16207; }
figure.chart { margin: 12px 0; } figure.chart svg { max-width: 100%; height: auto; }
.charts { display: flex; flex-wrap: wrap; gap: 8px; } .note { color: #4b5563; }
svg.lineage .node rect { fill: #fff; stroke: #8a94a6; stroke-width: 1.2; }
svg.lineage .stage rect { fill: #eef6ee; stroke: #17733a; } svg.lineage .stage.status-cached rect { fill: #eaf1fb; stroke: #1f5fa8; }
svg.lineage .stage.status-failed rect, svg.lineage .stage.status-lost rect, svg.lineage .stage.status-cancelled rect { fill: #fdeceb; stroke: #b3261e; }
svg.lineage .stage.status-skipped rect, svg.lineage .stage.status-pending rect { fill: #f3f4f6; stroke: #9ca3af; }
svg.lineage .stage.status-running rect { fill: #fef9e7; stroke: #a16207; } svg.lineage .external rect { fill: #f7f3fb; stroke: #7c4dab; }
svg.lineage text { font: 12px ui-monospace, monospace; fill: #1d2330; } svg.lineage text.label { font-weight: 600; } svg.lineage text.sub { fill: #4b5563; font-size: 11px; }
"#;

/// `text` safe inside HTML/SVG text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `sha256:0123456789ab` (12 hex digits).
pub fn short_digest(digest: &str) -> String {
    match digest.strip_prefix("sha256:") {
        Some(hex) => format!("sha256:{}", hex.chars().take(12).collect::<String>()),
        None => digest.chars().take(19).collect(),
    }
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn duration(ms: i64) -> String {
    let s = ms.max(0) as f64 / 1000.0;
    let whole = s as u64;
    if whole >= 3600 {
        format!("{}h{:02}m", whole / 3600, (whole % 3600) / 60)
    } else if whole >= 60 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{s:.1}s")
    }
}

/// The whole page.
pub fn render_html(data: &ReportData) -> Result<String> {
    let mut h = String::new();
    let title = data
        .title
        .clone()
        .unwrap_or_else(|| format!("{} — run {}", data.run.workflow, data.run.id));
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}</style></head><body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    header(&mut h, data);
    stages(&mut h, data);
    training(&mut h, data).context("drawing the training curves")?;
    languages(&mut h, data).context("drawing the German vs English charts")?;
    evals(&mut h, data);
    let _ = write!(
        h,
        "<h2>Lineage</h2>\n<p class=\"note\">Stages (boxes), external inputs and outputs (rounded, with short digests); dashed edges are order-only <code>needs</code>. Hover for details.</p>\n<div class=\"lineage\">{}</div>\n",
        lineage::svg(&lineage::graph(data))
    );
    h.push_str("<h3>Params</h3>\n");
    for name in &data.order {
        let params = serde_json::to_string_pretty(&data.stages[name].params).unwrap_or_default();
        let _ = writeln!(
            h,
            "<details><summary>{}</summary><pre>{}</pre></details>",
            esc(name),
            esc(&params)
        );
    }
    let _ = write!(
        h,
        "<footer><p class=\"note\">Made by leo {} from the state of run {}.</p></footer>\n</body></html>\n",
        esc(env!("CARGO_PKG_VERSION")),
        esc(&data.run.id)
    );
    Ok(h)
}

fn header(h: &mut String, data: &ReportData) {
    let run = &data.run;
    let p = run.provenance.as_ref();
    let pv = |k: &str| p.and_then(|p| p[k].as_str()).unwrap_or("-").to_string();
    let commit = p.and_then(|p| p["git"]["commit"].as_str()).map_or_else(
        || "-".to_string(),
        |c| {
            let dirty = p.and_then(|p| p["git"]["dirty"].as_bool()) == Some(true);
            format!("{c}{}", if dirty { " (uncommitted changes)" } else { "" })
        },
    );
    let ended = run.ended_at.map_or_else(|| "-".to_string(), time);
    let rows = [
        ("workflow", esc(&run.workflow)),
        ("run", format!("<code>{}</code>", esc(&run.id))),
        (
            "status",
            format!(
                "<span class=\"status-{0}\">{0}</span>{1}",
                esc(&run.status),
                // A report stage reports while its run is still going.
                if run.status == "running" {
                    " <span class=\"note\">(when this report was made)</span>"
                } else {
                    ""
                }
            ),
        ),
        ("started", esc(&time(run.started_at))),
        ("ended", esc(&ended)),
        ("leo version", esc(&pv("leo_version"))),
        ("git commit", format!("<code>{}</code>", esc(&commit))),
        ("host", esc(&pv("host"))),
    ];
    h.push_str("<table class=\"facts\">\n");
    for (k, v) in rows {
        let _ = writeln!(h, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    h.push_str("</table>\n");
}

fn ran(s: &StageContext) -> String {
    if s.cached {
        format!(
            "cached from run {}",
            s.cached_from_run.as_deref().unwrap_or("?")
        )
    } else if s.attempts.is_empty() {
        "did not run".to_string()
    } else {
        "ran".to_string()
    }
}

fn stages(h: &mut String, data: &ReportData) {
    h.push_str("<h2>Stages</h2>\n<table class=\"stages\"><tr><th>stage</th><th>plugin</th><th>status</th><th>cached or ran</th><th>duration</th><th>attempts</th><th>outputs</th></tr>\n");
    for name in &data.order {
        let s = &data.stages[name];
        let ms: i64 = s
            .attempts
            .iter()
            .filter_map(|a| a.finished_at.map(|f| f - a.started_at))
            .sum();
        let took = if s.attempts.is_empty() {
            "-".to_string()
        } else {
            duration(ms)
        };
        let outputs: Vec<String> = s
            .outputs
            .iter()
            .map(|(o, d)| format!("{} <code>{}</code>", esc(o), esc(&short_digest(d))))
            .collect();
        let mut status = format!("<span class=\"status-{0}\">{0}</span>", esc(&s.status));
        if let Some(e) = &s.error {
            let _ = write!(
                status,
                "<details><summary>error</summary><pre>{}</pre></details>",
                esc(e)
            );
        }
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{} {}</td><td>{status}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(name),
            esc(&s.plugin),
            esc(s.plugin_version.as_deref().unwrap_or("")),
            esc(&ran(s)),
            esc(&took),
            s.attempts.len(),
            outputs.join("<br>")
        );
    }
    h.push_str("</table>\n");
}

/// Line series of the named metrics, one per attempt when the points came from several.
fn series_of(s: &StageContext, names: &[&str]) -> Vec<Series> {
    let mut out = Vec::new();
    for name in names {
        let points: Vec<_> = s
            .metrics
            .iter()
            .filter(|m| m.name == *name && m.step.is_some())
            .collect();
        let mut attempts: Vec<u32> = points.iter().map(|m| m.attempt).collect();
        attempts.dedup();
        for a in &attempts {
            let label = if attempts.len() > 1 {
                format!("{name} (attempt {a})")
            } else {
                name.to_string()
            };
            out.push(Series {
                label,
                points: points
                    .iter()
                    .filter(|m| m.attempt == *a)
                    .map(|m| (m.step.unwrap_or(0) as f64, m.value))
                    .collect(),
            });
        }
    }
    out
}

fn training(h: &mut String, data: &ReportData) -> Result<()> {
    if data.training.is_empty() {
        return Ok(());
    }
    h.push_str("<h2>Training</h2>\n");
    for name in &data.training {
        let s = &data.stages[name];
        let _ = writeln!(h, "<h3>{}</h3>", esc(name));
        let loss = charts::line_chart(
            &format!("{name}: loss"),
            "loss",
            &series_of(s, LOSS_METRICS),
        )
        .with_context(|| format!("stage {name}"))?;
        let _ = writeln!(
            h,
            "<figure class=\"chart loss\" data-stage=\"{}\">{loss}</figure>",
            esc(name)
        );
        let lr = series_of(s, &["lr"]);
        if !lr.is_empty() {
            let svg = charts::line_chart(&format!("{name}: learning rate"), "lr", &lr)
                .with_context(|| format!("stage {name}"))?;
            let _ = writeln!(
                h,
                "<figure class=\"chart lr\" data-stage=\"{}\">{svg}</figure>",
                esc(name)
            );
        }
    }
    Ok(())
}

fn languages(h: &mut String, data: &ReportData) -> Result<()> {
    if data.pairs.is_empty() {
        return Ok(());
    }
    h.push_str("<h2>German vs English</h2>\n<p class=\"note\">Each German task beside its English counterpart, for every eval stage.</p>\n<div class=\"charts\">\n");
    for pair in &data.pairs {
        let svg = charts::pair_chart(pair)
            .with_context(|| format!("{} vs {} ({})", pair.german, pair.english, pair.metric))?;
        let _ = writeln!(
            h,
            "<figure class=\"chart pair\" data-german=\"{}\" data-english=\"{}\">{svg}</figure>",
            esc(&pair.german),
            esc(&pair.english)
        );
    }
    h.push_str("</div>\n");
    Ok(())
}

fn evals(h: &mut String, data: &ReportData) {
    if data.evals.is_empty() {
        return;
    }
    let mut stages: Vec<&str> = Vec::new();
    let mut keys: Vec<(&str, &str, bool)> = Vec::new();
    for r in &data.evals {
        if !stages.contains(&r.stage.as_str()) {
            stages.push(&r.stage);
        }
        let key = (r.task.as_str(), r.metric.as_str(), r.lower_is_better);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.sort();
    h.push_str("<h2>Evaluations</h2>\n<table class=\"evals\"><tr><th>task</th><th>metric</th>");
    for s in &stages {
        let _ = write!(h, "<th>{}</th>", esc(s));
    }
    h.push_str("</tr>\n");
    for (task, metric, lower) in keys {
        let arrow = if lower {
            " <span class=\"note\">(lower is better)</span>"
        } else {
            ""
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}{arrow}</td>",
            esc(task),
            esc(metric)
        );
        for s in &stages {
            let cell = data
                .evals
                .iter()
                .find(|r| r.stage == *s && r.task == task && r.metric == metric);
            let text = match cell {
                None => String::new(),
                Some(r) => {
                    let v = r.value.map_or_else(|| "NaN".to_string(), format_value);
                    match r.stderr {
                        Some(e) => format!("{v} ± {}", format_value(e)),
                        None => v,
                    }
                }
            };
            let _ = write!(h, "<td class=\"num\">{}</td>", esc(&text));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
}
