//! The run context ([`leo_plugin::RunContext`]): what the state knows about a run and its
//! stages, for plugins that ask for it (the `report` stage) and for `leo report`. One builder
//! for both, so a report made by a stage and one made afterwards from the state agree.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context, Result};
use leo_plugin::{
    AttemptInfo, AttemptRef, InputInfo, MetricPoint, RunContext, RunInfo, StageContext,
    RUN_CONTEXT_VERSION,
};
use leo_spec::{InputRef, Workflow};
use leo_state::{AttemptRecord, AttemptStatus, MetricRecord, RunStatus, StageStatus, State};
use serde_json::Value;

/// Every stage `stage` waits for, directly or through others.
pub fn upstream(dag: &leo_spec::Dag, stage: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = dag.dependencies(stage);
    while let Some(s) = stack.pop() {
        if seen.insert(s.clone()) {
            stack.extend(dag.dependencies(&s));
        }
    }
    seen
}

/// The context of run `run_id` for the stages in `only` (all of the run's stages when `None`).
pub async fn run_context(
    state: &State,
    run_id: &str,
    only: Option<&BTreeSet<String>>,
) -> Result<RunContext> {
    let run = state
        .get_run(run_id)
        .await?
        .with_context(|| format!("no run `{run_id}` in {}", state.location()))?;
    let workflow: Workflow = serde_json::from_str(&run.spec_json).with_context(|| {
        format!("run {run_id}: the stored workflow cannot be read by this leo version")
    })?;
    let records = state.stages_by_name(run_id).await?;
    let mut attempts: HashMap<String, Vec<AttemptRecord>> = HashMap::new();
    for a in state.attempts(run_id).await? {
        attempts.entry(a.stage.clone()).or_default().push(a);
    }
    let mut metrics: HashMap<String, Vec<MetricRecord>> = HashMap::new();
    for m in state.run_metrics(run_id, None).await? {
        metrics.entry(m.stage.clone()).or_default().push(m);
    }
    let mut outputs: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    for name in workflow.stages.keys() {
        let outs = state
            .stage_outputs(run_id, name)
            .await
            .with_context(|| format!("run {run_id}: reading the outputs of stage {name}"))?;
        outputs.insert(name.clone(), outs.into_iter().collect());
    }

    let mut stages = BTreeMap::new();
    for (name, spec) in &workflow.stages {
        if only.is_some_and(|o| !o.contains(name)) {
            continue;
        }
        let record = records.get(name);
        let status = record.map_or(StageStatus::Pending, |r| r.status);
        let fingerprint: Option<Value> = record
            .and_then(|r| r.fingerprint_json.as_deref())
            .and_then(|j| serde_json::from_str(j).ok());
        let (plugin, plugin_version, params) = match &fingerprint {
            Some(fp) => (
                fp["plugin"]["name"]
                    .as_str()
                    .map_or_else(|| spec.plugin.to_string(), str::to_string),
                fp["plugin"]["version"].as_str().map(str::to_string),
                fp["params"].clone(),
            ),
            None => (spec.plugin.to_string(), None, spec.params.clone()),
        };
        let here = attempts.get(name).map(Vec::as_slice).unwrap_or_default();
        let cached = status == StageStatus::Cached;
        let stage_outputs = outputs.get(name).cloned().unwrap_or_default();

        // The attempt whose outputs these are, and the metric series that led to them.
        let (produced_by, producer_id, series) = if cached {
            match origin_attempt(state, record, name, &stage_outputs).await? {
                Some(a) => {
                    let series = state
                        .run_metrics(&a.run_id, Some(&a.stage))
                        .await?
                        .into_iter()
                        .filter(|m| i64::from(m.attempt) <= a.number)
                        .collect();
                    (Some(attempt_ref(&a)?), Some(a.id.clone()), series)
                }
                None => (None, None, Vec::new()),
            }
        } else {
            let mine = metrics.get(name).cloned().unwrap_or_default();
            match here
                .iter()
                .rev()
                .find(|a| a.status == AttemptStatus::Succeeded)
            {
                Some(a) if status.is_done() => {
                    let series = mine
                        .into_iter()
                        .filter(|m| i64::from(m.attempt) <= a.number)
                        .collect();
                    (Some(attempt_ref(a)?), Some(a.id.clone()), series)
                }
                _ => (None, here.last().map(|a| a.id.clone()), mine),
            }
        };

        // Inputs as the workflow names them, with the digests the stage was given.
        let edges: HashMap<String, String> = match &producer_id {
            Some(id) => state
                .attempt_inputs(id)
                .await?
                .into_iter()
                .filter(|(rel, _, _)| rel == "input")
                .map(|(_, n, d)| (n, d))
                .collect(),
            None => HashMap::new(),
        };
        let inputs =
            spec.inputs
                .iter()
                .map(|(input, reference)| {
                    let info = match reference {
                        InputRef::Stage { stage, output } => InputInfo {
                            stage: Some(stage.clone()),
                            output: Some(output.clone()),
                            uri: None,
                            digest: edges.get(input).cloned().or_else(|| {
                                outputs.get(stage).and_then(|o| o.get(output)).cloned()
                            }),
                        },
                        InputRef::External { uri } => InputInfo {
                            stage: None,
                            output: None,
                            uri: Some(uri.clone()),
                            digest: edges.get(input).cloned(),
                        },
                    };
                    (input.clone(), info)
                })
                .collect();

        stages.insert(
            name.clone(),
            StageContext {
                plugin,
                plugin_version,
                params,
                status: status.as_str().to_string(),
                error: record.and_then(|r| r.error.clone()),
                fingerprint: record.and_then(|r| r.fingerprint.clone()),
                cached,
                cached_from_run: record.and_then(|r| r.cached_from_run.clone()),
                produced_by,
                attempts: here
                    .iter()
                    .map(|a| {
                        Ok(AttemptInfo {
                            number: u32::try_from(a.number)?,
                            status: a.status.as_str().to_string(),
                            started_at: a.started_at,
                            finished_at: a.finished_at,
                            error: a.error.clone(),
                        })
                    })
                    .collect::<Result<_>>()?,
                needs: spec.needs.clone(),
                inputs,
                outputs: stage_outputs,
                metrics: series
                    .into_iter()
                    .map(|m| MetricPoint {
                        name: m.name,
                        step: m.step,
                        value: m.value,
                        attempt: m.attempt,
                    })
                    .collect(),
            },
        );
    }
    Ok(RunContext {
        leo_run_context: RUN_CONTEXT_VERSION,
        run: RunInfo {
            id: run.id.clone(),
            workflow: run.workflow_name.clone(),
            status: run.status.as_str().to_string(),
            started_at: run.created_at,
            ended_at: (run.status != RunStatus::Running).then_some(run.updated_at),
            provenance: run
                .provenance
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok()),
        },
        stages,
    })
}

fn attempt_ref(a: &AttemptRecord) -> Result<AttemptRef> {
    Ok(AttemptRef {
        run: a.run_id.clone(),
        stage: a.stage.clone(),
        attempt: u32::try_from(a.number)
            .with_context(|| format!("attempt {}: bad number {}", a.id, a.number))?,
    })
}

/// The attempt that originally produced a cached stage's outputs: the producer of one of its
/// outputs, else the last successful attempt of the stage of that name in the run it was
/// cached from (a stage without outputs).
async fn origin_attempt(
    state: &State,
    record: Option<&leo_state::StageRecord>,
    stage: &str,
    outputs: &BTreeMap<String, String>,
) -> Result<Option<AttemptRecord>> {
    for digest in outputs.values() {
        if let Some((attempt, relation, _)) = state.producer(digest).await? {
            if relation == "output" {
                return Ok(Some(attempt));
            }
        }
    }
    let Some(from) = record.and_then(|r| r.cached_from_run.as_deref()) else {
        return Ok(None);
    };
    Ok(state
        .attempts(from)
        .await?
        .into_iter()
        .rfind(|a| a.stage == stage && a.status == AttemptStatus::Succeeded))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::catalog::PluginInfo;
    use crate::fingerprint::Fingerprint;

    #[test]
    fn upstream_follows_inputs_and_needs_transitively_and_nothing_else() {
        let text = r#"
[workflow]
name = "u"
[stages.a]
plugin = "shell"
params = { run = "true", outputs = ["x"] }
[stages.b]
plugin = "shell"
inputs = { x = "a.x" }
params = { run = "true", outputs = ["y"] }
[stages.side]
plugin = "shell"
params = { run = "true" }
[stages.c]
plugin = "shell"
needs = ["side"]
inputs = { y = "b.y" }
params = { run = "true" }
[stages.after]
plugin = "shell"
needs = ["c"]
params = { run = "true" }
"#;
        let loaded = leo_spec::load_str(Path::new("u.toml"), text.to_string()).unwrap();
        let names = |s: &str| upstream(&loaded.dag, s).into_iter().collect::<Vec<_>>();
        assert_eq!(names("c"), ["a", "b", "side"]);
        assert_eq!(names("after"), ["a", "b", "c", "side"]);
        assert!(names("a").is_empty());
    }

    #[test]
    fn asking_for_a_run_context_changes_no_fingerprint() {
        let info = |wants_run_context| PluginInfo {
            name: "report".into(),
            version: "1".into(),
            outputs: vec!["report".into()],
            command: vec![],
            builtin: true,
            wants_run_context,
            estimate: None,
        };
        let inputs = BTreeMap::from([("x".to_string(), "sha256:aa".to_string())]);
        let fp = |i: &PluginInfo| {
            Fingerprint::compute(
                i,
                &serde_json::json!({}),
                &BTreeMap::new(),
                &inputs,
                &BTreeMap::new(),
            )
            .hash
        };
        assert_eq!(fp(&info(true)), fp(&info(false)));
    }
}
