//! `status`, `list`, `logs`.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use leo_state::State;
use leo_store::ArtifactStore;

use super::{format_seconds, format_time, state_location, work_root};

async fn open(state_flag: Option<String>) -> Result<(State, String)> {
    let loc = state_location(state_flag, None);
    Ok((State::open_existing(&loc).await?, loc))
}

pub async fn status(state_flag: Option<String>, run: Option<&str>, json: bool) -> Result<ExitCode> {
    let (state, _) = open(state_flag).await?;
    let run = match run {
        Some(id) => state
            .get_run(id)
            .await?
            .with_context(|| format!("no run `{id}` (see `leo list`)"))?,
        None => state.latest_run(None).await?.context("no runs yet")?,
    };
    let stages = state.stages(&run.id).await?;
    let attempts = state.attempts(&run.id).await?;
    if json {
        let mut out = Vec::new();
        for s in &stages {
            let outputs: serde_json::Map<String, serde_json::Value> = state
                .stage_outputs(&run.id, &s.name)
                .await?
                .into_iter()
                .map(|(n, d)| (n, serde_json::Value::String(d)))
                .collect();
            let mine: Vec<_> = attempts.iter().filter(|a| a.stage == s.name).collect();
            let mut v = serde_json::to_value(s)?;
            v["outputs"] = serde_json::Value::Object(outputs);
            v["attempt_list"] = serde_json::to_value(&mine)?;
            let checkpoints: Vec<serde_json::Value> = state
                .checkpoints(&run.id, &s.name)
                .await?
                .into_iter()
                .map(|(step, digest)| serde_json::json!({ "step": step, "digest": digest }))
                .collect();
            v["checkpoints"] = serde_json::Value::Array(checkpoints);
            // The latest value of each metric of the stage's last attempt.
            let metrics = match mine.last() {
                Some(a) => state.latest_metrics(&a.id).await?,
                None => Default::default(),
            };
            v["metrics"] = serde_json::to_value(metrics)?;
            out.push(v);
        }
        let mut v = serde_json::json!({ "run": run, "stages": out });
        v["run"]["engine_gone"] = serde_json::Value::Bool(leo_engine::engine_is_gone(
            &run,
            std::time::Duration::from_secs(10),
        ));
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let status = if leo_engine::engine_is_gone(&run, std::time::Duration::from_secs(10)) {
        format!(
            "{} (its engine is gone: finish it with `leo resume {}`)",
            run.status, run.id
        )
    } else {
        run.status.to_string()
    };
    println!(
        "run {}  workflow {}  {}  started {}  ({})",
        run.id,
        run.workflow_name,
        status,
        format_time(run.created_at),
        run.workflow_path
    );
    let width = stages
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:width$}  {:10} {:>8}  {:>9}  note",
        "stage", "status", "attempts", "time"
    );
    for s in &stages {
        let last = attempts.iter().rfind(|a| a.stage == s.name);
        let time = last
            .and_then(|a| {
                a.finished_at
                    .map(|f| format_seconds((f - a.started_at) as f64 / 1000.0))
            })
            .unwrap_or_default();
        let note = match (
            &s.cached_from_run,
            &s.error,
            last.and_then(|a| a.resumed_from.as_ref()),
        ) {
            (Some(r), _, _) => format!("cached from run {r}"),
            (_, Some(e), _) => crate::progress::elide_middle(e.lines().next().unwrap_or(""), 160),
            (_, _, Some(c)) => format!("resumed from {}", short(c)),
            _ => String::new(),
        };
        // A running stage shows how far it got (from its latest recorded progress event).
        let note = match last {
            Some(a) if s.status == leo_state::StageStatus::Running => {
                let progress = state
                    .latest_event(&a.id, "progress")
                    .await?
                    .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
                    .map(|p| match p["total"].as_u64() {
                        Some(t) => {
                            format!("{}/{t} {}", p["done"], p["unit"].as_str().unwrap_or(""))
                        }
                        None => format!("{} {}", p["done"], p["unit"].as_str().unwrap_or("")),
                    });
                let running_for =
                    format_seconds((leo_state::now_ms() - a.started_at) as f64 / 1000.0);
                match progress {
                    Some(p) => format!("{} for {running_for}; {note}", p.trim()),
                    None => format!("running for {running_for}; {note}"),
                }
                .trim_end_matches("; ")
                .to_string()
            }
            _ => note,
        };
        println!(
            "{:width$}  {:10} {:>8}  {:>9}  {}",
            s.name,
            s.status.as_str(),
            s.attempts,
            time,
            note
        );
        // The cluster jobs that ran its attempts (`slurm:<id>`), oldest first.
        let jobs: Vec<String> = attempts
            .iter()
            .filter(|a| a.stage == s.name)
            .filter_map(|a| {
                a.job_id
                    .as_ref()
                    .map(|j| format!("{j} (attempt {}, {})", a.number, a.status.as_str()))
            })
            .collect();
        if !jobs.is_empty() {
            println!("    jobs: {}", jobs.join(", "));
        }
        // The latest value of each metric of the stage's last attempt, on a line of its own.
        if let Some(a) = last {
            if let Some(line) = metrics_line(&state.latest_metric_values(&a.id).await?) {
                println!("    {line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `loss 2.314  lr 2.0e-05  tokens_per_s 1520  (step 40)`: each metric's latest value, in the
/// order they were first reported, and the step of the latest one that had a step.
fn metrics_line(metrics: &[leo_state::LatestMetric]) -> Option<String> {
    if metrics.is_empty() {
        return None;
    }
    let mut line = metrics
        .iter()
        .map(|m| format!("{} {}", m.name, format_metric(m.value)))
        .collect::<Vec<_>>()
        .join("  ");
    if let Some(step) = metrics
        .iter()
        .filter(|m| m.step.is_some())
        .max_by_key(|m| m.seq)
        .and_then(|m| m.step)
    {
        line.push_str(&format!("  (step {step})"));
    }
    Some(line)
}

/// A metric value in a few characters: integers as they are, four significant digits between
/// 0.001 and a million, scientific notation (`2.0e-05`) beyond.
fn format_metric(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let magnitude = v.abs().log10().floor() as i32;
    if (-3..6).contains(&magnitude) {
        let decimals = (3 - magnitude).max(0) as usize;
        let text = format!("{v:.decimals$}");
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.')
        } else {
            &text
        };
        return text.to_string();
    }
    // Rust writes `2e-5`; people read `2.0e-05`.
    let text = format!("{v:.1e}");
    match text.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => text,
    }
}

pub async fn list(state_flag: Option<String>, limit: i64, json: bool) -> Result<ExitCode> {
    let (state, _) = open(state_flag).await?;
    let runs = state.list_runs(limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    for r in runs {
        println!(
            "{}  {:10} {}  {}",
            r.id,
            r.status.as_str(),
            format_time(r.created_at),
            r.workflow_name
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(
    state_flag: Option<String>,
    run: &str,
    stage: &str,
    attempt: Option<u32>,
    raw: bool,
) -> Result<ExitCode> {
    let (state, loc) = open(state_flag).await?;
    let run_rec = super::find_run(&state, run).await?;
    let run = run_rec.id.as_str();
    let mut attempts: Vec<_> = state
        .attempts(run)
        .await?
        .into_iter()
        .filter(|a| a.stage == stage)
        .collect();
    if attempts.is_empty() {
        // A cached stage did not run here: show the log of the run that produced its outputs.
        let origin = state
            .stages(run)
            .await?
            .into_iter()
            .find(|s| s.name == stage)
            .and_then(|s| s.cached_from_run);
        if let Some(origin) = origin {
            eprintln!(
                "leo: stage `{stage}` was cached in run {run}; showing its log from run {origin}"
            );
            attempts = state
                .attempts(&origin)
                .await?
                .into_iter()
                .filter(|a| a.stage == stage)
                .collect();
        }
    }
    let chosen = match attempt {
        Some(n) => attempts.iter().find(|a| a.number == i64::from(n)),
        None => attempts.last(),
    };
    let Some(a) = chosen else {
        bail!(
            "stage `{stage}` of run {run} has no attempt{}",
            attempt.map(|n| format!(" {n}")).unwrap_or_default()
        );
    };
    let bytes = match &a.log_artifact {
        Some(digest) => {
            let store = ArtifactStore::open(&run_rec.store_url)?;
            store.read_file(digest, "log.txt").await?
        }
        None => {
            // Still running (or lost): the log is in the attempt's working folder.
            let path = leo_engine::attempt_dir(&work_root(&loc), &a.run_id, stage, a.number as u32)
                .join("log.txt");
            std::fs::read(&path).with_context(|| {
                format!(
                    "no stored log for attempt {}, and {} is unreadable",
                    a.number,
                    path.display()
                )
            })?
        }
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if raw {
        out.write_all(&bytes)?;
    } else {
        // Protocol events are recorded in the state; the log shows what the stage printed,
        // with its `log` events as text.
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            match leo_plugin::Event::parse_line(&String::from_utf8_lossy(line)) {
                None => out.write_all(line)?,
                Some(leo_plugin::Event::Log { level, message }) => {
                    writeln!(out, "[{level}] {message}")?
                }
                Some(_) => {}
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn short(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_are_short() {
        let cases = [
            (2.314, "2.314"),
            (2.0e-5, "2.0e-05"),
            (0.83, "0.83"),
            (1520.0, "1520"),
            (1519.6, "1520"),
            (0.0, "0"),
            (-3.0, "-3"),
            (0.12345, "0.1235"),
            (3.5e9 + 0.5, "3.5e+09"),
            (f64::NAN, "NaN"),
        ];
        for (v, want) in cases {
            assert_eq!(format_metric(v), want, "{v}");
        }
    }

    #[test]
    fn the_metrics_line_ends_with_the_latest_step() {
        let m = |name: &str, value, step, seq| leo_state::LatestMetric {
            name: name.into(),
            value,
            step,
            seq,
        };
        let line = metrics_line(&[
            m("loss", 2.314, Some(40), 5),
            m("lr", 2.0e-5, Some(40), 6),
            m("tokens", 12.0, None, 7),
        ]);
        assert_eq!(
            line.as_deref(),
            Some("loss 2.314  lr 2.0e-05  tokens 12  (step 40)")
        );
        assert_eq!(
            metrics_line(&[m("docs", 3.0, None, 1)]).as_deref(),
            Some("docs 3")
        );
        assert_eq!(metrics_line(&[]), None);
    }
}
