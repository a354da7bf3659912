//! `leo plan`: what would run, what is cached, and why.

use std::collections::HashMap;

use anyhow::Result;
use leo_state::State;
use leo_store::ArtifactStore;
use serde::Serialize;
use serde_json::Value;

use crate::check::Checked;
use crate::fingerprint::diff_fields;
use crate::scheduler::{fingerprint_stage, lookup_cache, DoneStage, Externals};

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PlanStatus {
    /// A previous success with the same fingerprint will be reused.
    Cached {
        from_run: String,
        fingerprint: String,
    },
    /// The stage will run; `reason` says why.
    Run {
        reason: String,
        /// Fields that differ from the same stage's last recorded fingerprint.
        changed: Vec<String>,
        fingerprint: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanEntry {
    pub stage: String,
    #[serde(flatten)]
    pub status: PlanStatus,
}

/// Plans a checked workflow against the state and store, without running anything.
pub async fn plan(
    checked: &Checked,
    state: &State,
    store: &ArtifactStore,
) -> Result<Vec<PlanEntry>> {
    let previous = previous_payloads(checked, state).await?;
    let mut done: HashMap<String, DoneStage> = HashMap::new();
    let mut externals = Externals::for_plan(state);
    let mut entries = Vec::new();
    for name in checked.dag.topo_order() {
        let deps = checked.dag.dependencies(name);
        let rerun: Vec<&String> = deps.iter().filter(|d| !done.contains_key(*d)).collect();
        if !rerun.is_empty() {
            let names: Vec<String> = rerun.iter().map(|d| format!("`{d}`")).collect();
            entries.push(PlanEntry {
                stage: name.clone(),
                status: PlanStatus::Run {
                    reason: format!("upstream {} will run", names.join(", ")),
                    changed: Vec::new(),
                    fingerprint: None,
                },
            });
            continue;
        }
        let (fp, _) = match fingerprint_stage(checked, name, &done, &mut externals).await {
            Ok(x) => x,
            Err(e) => {
                entries.push(PlanEntry {
                    stage: name.clone(),
                    status: PlanStatus::Run {
                        reason: format!("{e:#}"),
                        changed: Vec::new(),
                        fingerprint: None,
                    },
                });
                continue;
            }
        };
        let outputs = &checked.plugins[name].outputs;
        if let Some((from_run, outs)) = lookup_cache(state, store, &fp.hash, outputs).await? {
            done.insert(
                name.clone(),
                DoneStage {
                    fingerprint: fp.hash.clone(),
                    outputs: outs,
                },
            );
            entries.push(PlanEntry {
                stage: name.clone(),
                status: PlanStatus::Cached {
                    from_run,
                    fingerprint: fp.hash,
                },
            });
            continue;
        }
        let (reason, changed) = match previous.get(name) {
            None => ("never ran".to_string(), Vec::new()),
            Some(old) => {
                let changed: Vec<String> = diff_fields(old, &fp.payload)
                    .into_iter()
                    .map(|(path, a, b)| {
                        // Environment values may be credentials: say that they changed, not how.
                        if path.starts_with("env.") {
                            format!("{path}: (value changed)")
                        } else {
                            format!("{path}: {} -> {}", show(a), show(b))
                        }
                    })
                    .collect();
                if changed.is_empty() {
                    (
                        "its earlier result is gone or did not succeed".to_string(),
                        changed,
                    )
                } else {
                    ("changed since the last run".to_string(), changed)
                }
            }
        };
        entries.push(PlanEntry {
            stage: name.clone(),
            status: PlanStatus::Run {
                reason,
                changed,
                fingerprint: Some(fp.hash),
            },
        });
    }
    Ok(entries)
}

/// The fingerprint payloads recorded for each stage in the latest run of this workflow.
async fn previous_payloads(checked: &Checked, state: &State) -> Result<HashMap<String, Value>> {
    let mut out = HashMap::new();
    let Some(run) = state.latest_run(Some(&checked.workflow.name)).await? else {
        return Ok(out);
    };
    for stage in state.stages(&run.id).await? {
        if let Some(json) = stage.fingerprint_json {
            if let Ok(v) = serde_json::from_str(&json) {
                out.insert(stage.name, v);
            }
        }
    }
    Ok(out)
}

fn show(v: Option<Value>) -> String {
    match v {
        None => "(absent)".to_string(),
        Some(v) => {
            let s = v.to_string();
            if s.len() > 60 {
                format!(
                    "{}…",
                    &s[..s.char_indices().nth(57).map_or(s.len(), |(i, _)| i)]
                )
            } else {
                s
            }
        }
    }
}
