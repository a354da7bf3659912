//! `leo lineage ARTIFACT`: the chain of attempts and inputs that produced an artifact.

use std::collections::HashSet;
use std::process::ExitCode;

use anyhow::{bail, Result};
use leo_state::State;
use leo_store::ArtifactStore;
use serde_json::{json, Value};

use super::inspect::short;
use super::lineage_export as export;
use super::state_location;
use crate::cli::LineageFormat;

pub async fn lineage(
    state_flag: Option<String>,
    artifact: &str,
    format: LineageFormat,
    from_store: Option<String>,
) -> Result<ExitCode> {
    let tree = match from_store {
        Some(url) => {
            let store = ArtifactStore::open(&url)?;
            if !artifact.starts_with("sha256:") || artifact.len() != 71 {
                bail!("--from-store needs the full digest (sha256: and 64 hex digits)");
            }
            if !store.exists(artifact).await? {
                bail!("no artifact {artifact} in {}", store.url());
            }
            let mut seen = HashSet::new();
            record_node(&store, artifact, None, &mut seen).await?
        }
        None => {
            let state = State::open_existing(&state_location(state_flag, None)).await?;
            let digest = resolve(&state, artifact).await?;
            let mut seen = HashSet::new();
            node(&state, &digest, &mut seen).await?
        }
    };
    match format {
        LineageFormat::Tree => print_tree(&tree, "", true, true),
        LineageFormat::Json => println!("{}", serde_json::to_string_pretty(&tree)?),
        LineageFormat::Dot => print!("{}", export::dot(&tree)),
        LineageFormat::Mermaid => print!("{}", export::mermaid(&tree)),
        LineageFormat::Openlineage => {
            for event in export::openlineage(&tree) {
                println!("{}", serde_json::to_string(&event)?);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn resolve(state: &State, text: &str) -> Result<String> {
    let prefix = if text.starts_with("sha256:") {
        text.to_string()
    } else {
        format!("sha256:{text}")
    };
    let matches = state.artifacts_with_prefix(&prefix).await?;
    match matches.len() {
        0 => bail!("no artifact `{text}` in this state database"),
        1 => Ok(matches[0].clone()),
        _ => bail!("`{text}` is ambiguous: {}", matches.join(", ")),
    }
}

/// The artifact, its producing attempt and, recursively, that attempt's inputs.
fn node<'a>(
    state: &'a State,
    digest: &'a str,
    seen: &'a mut HashSet<String>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value>> + Send + 'a>> {
    Box::pin(async move {
        let record = state.artifact(digest).await?;
        let mut v = json!({ "artifact": digest, "kind": record.as_ref().map(|r| r.kind.clone()) });
        if let Some(uri) = record.as_ref().and_then(|r| r.uri.clone()) {
            v["uri"] = json!(uri);
        }
        if !seen.insert(digest.to_string()) {
            v["repeated"] = json!(true);
            return Ok(v);
        }
        let Some((attempt, relation, name)) = state.producer(digest).await? else {
            return Ok(v);
        };
        let plugin = state
            .stages(&attempt.run_id)
            .await?
            .into_iter()
            .find(|s| s.name == attempt.stage)
            .and_then(|s| s.fingerprint_json)
            .and_then(|j| serde_json::from_str::<Value>(&j).ok())
            .map(|p| json!({ "plugin": p["plugin"], "params": p["params"] }));
        let mut inputs = Vec::new();
        for (rel, input_name, input_digest) in state.attempt_inputs(&attempt.id).await? {
            let mut child = node(state, &input_digest, seen).await?;
            child["relation"] = json!(rel);
            child["name"] = json!(input_name);
            inputs.push(child);
        }
        let run = state.get_run(&attempt.run_id).await?;
        let environment = state.attempt_environment(&attempt.id).await?;
        // The producing attempt's last reported value of each metric: a checkpoint's final
        // loss, an evaluation's scores.
        let metrics = state.latest_metrics(&attempt.id).await?;
        v["produced_by"] = json!({
            "workflow": run.as_ref().map(|r| r.workflow_name.clone()),
            "provenance": run
                .as_ref()
                .and_then(|r| r.provenance.as_deref())
                .and_then(|p| serde_json::from_str::<Value>(p).ok()),
            "attempt_status": attempt.status.as_str(),
            "environment": environment,
            "metrics": metrics,
            "run": attempt.run_id,
            "stage": attempt.stage,
            "attempt": attempt.number,
            "host": attempt.host,
            "as": relation,
            "name": name,
            "started_at": attempt.started_at,
            "finished_at": attempt.finished_at,
            "code": plugin,
        });
        v["inputs"] = Value::Array(inputs);
        Ok(v)
    })
}

/// Like [`node`], from the artifacts' `.leo-artifact.json` records in the store.
fn record_node<'a>(
    store: &'a ArtifactStore,
    digest: &'a str,
    uri: Option<&'a str>,
    seen: &'a mut HashSet<String>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value>> + Send + 'a>> {
    Box::pin(async move {
        let mut v = json!({ "artifact": digest });
        if let Some(uri) = uri {
            v["uri"] = json!(uri);
        }
        if !seen.insert(digest.to_string()) {
            v["repeated"] = json!(true);
            return Ok(v);
        }
        let records = store.records(digest).await?;
        let Some(record) = records
            .first()
            .and_then(|r| serde_json::from_slice::<Value>(r).ok())
        else {
            return Ok(v);
        };
        let mut produced = record["produced_by"].clone();
        produced["as"] = json!("output");
        produced["name"] = record["output"].clone();
        v["kind"] = json!("output");
        let mut inputs = Vec::new();
        for input in record["inputs"].as_array().into_iter().flatten() {
            let Some(d) = input["digest"].as_str() else {
                continue;
            };
            let mut child = record_node(store, d, input["uri"].as_str(), seen).await?;
            child["relation"] = json!("input");
            child["name"] = input["name"].clone();
            inputs.push(child);
        }
        v["produced_by"] = produced;
        v["inputs"] = Value::Array(inputs);
        Ok(v)
    })
}

fn print_tree(v: &Value, prefix: &str, last: bool, root: bool) {
    let digest = v["artifact"].as_str().unwrap_or("?");
    let mut line = String::new();
    if let (Some(rel), Some(name)) = (v["relation"].as_str(), v["name"].as_str()) {
        line.push_str(&format!("{rel} `{name}`: "));
    }
    line.push_str(&short(digest));
    if let Some(p) = v.get("produced_by").filter(|p| !p.is_null()) {
        let plugin = &p["code"]["plugin"];
        line.push_str(&format!(
            "  {} `{}` of stage {} (run {}, attempt {}, plugin {} {})",
            p["as"].as_str().unwrap_or(""),
            p["name"].as_str().unwrap_or(""),
            p["stage"].as_str().unwrap_or(""),
            p["run"].as_str().unwrap_or(""),
            p["attempt"],
            plugin["name"].as_str().unwrap_or("?"),
            plugin["version"].as_str().unwrap_or("?"),
        ));
    } else if let Some(uri) = v["uri"].as_str() {
        line.push_str(&format!("  external {uri}"));
    }
    if v["repeated"].as_bool() == Some(true) {
        line.push_str("  (see above)");
    }
    if root {
        println!("{line}");
    } else {
        println!("{prefix}{}{line}", if last { "└── " } else { "├── " });
    }
    let children = v["inputs"].as_array().cloned().unwrap_or_default();
    let child_prefix = if root {
        String::new()
    } else {
        format!("{prefix}{}", if last { "    " } else { "│   " })
    };
    if let Some(metrics) = v["produced_by"]["metrics"]
        .as_object()
        .filter(|m| !m.is_empty())
    {
        const SHOWN: usize = 12;
        let mut text: Vec<String> = metrics
            .iter()
            .take(SHOWN)
            .map(|(name, value)| format!("{name}={}", format_metric(value)))
            .collect();
        if metrics.len() > SHOWN {
            text.push(format!("… {} more (--json)", metrics.len() - SHOWN));
        }
        let bar = if children.is_empty() { " " } else { "│" };
        println!("{child_prefix}{bar}   metrics: {}", text.join(", "));
    }
    for (i, c) in children.iter().enumerate() {
        print_tree(c, &child_prefix, i + 1 == children.len(), false);
    }
}

/// A metric value for the tree: four decimals, or scientific notation when very large or small.
fn format_metric(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x != 0.0 && (x.abs() >= 1e5 || x.abs() < 1e-3) => format!("{x:.3e}"),
        Some(x) => format!("{}", (x * 1e4).round() / 1e4),
        None => v.to_string(),
    }
}
