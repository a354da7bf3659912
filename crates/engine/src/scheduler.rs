//! The run loop: starts every stage whose dependencies are done and whose resources are free,
//! reuses cached results, retries failures with backoff, and cancels cleanly.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use leo_spec::InputRef;
use leo_state::{OutputArtifact, RunStatus, StageCompletion, StageStatus, StageUpdate, State};
use leo_store::ArtifactStore;
use tokio::sync::{mpsc, watch};

use crate::attempt::{self, AttemptOutcome, AttemptSpec};
use crate::check::Checked;
use crate::fingerprint::Fingerprint;
use crate::observer::{EngineEvent, Observer};
use crate::resources::{Grant, Pool};
use crate::run::{EngineOptions, RunOutcome};

/// A finished stage: what downstream fingerprints and inputs need.
#[derive(Debug, Clone)]
pub(crate) struct DoneStage {
    pub fingerprint: String,
    pub outputs: BTreeMap<String, String>,
}

/// An input resolved to an artifact digest.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedInput {
    pub name: String,
    pub digest: String,
    /// For external inputs: the URI and the local path to hand to the plugin.
    pub external: Option<(String, PathBuf)>,
}

/// Digests of external inputs, computed once per process.
#[derive(Default)]
pub(crate) struct Externals {
    digests: HashMap<String, (String, PathBuf)>,
}

impl Externals {
    pub async fn digest(&mut self, uri: &str) -> Result<(String, PathBuf)> {
        if let Some(d) = self.digests.get(uri) {
            return Ok(d.clone());
        }
        let Some(path) = uri.strip_prefix("file://") else {
            bail!("input `{uri}`: only file:// inputs are supported so far");
        };
        let path = PathBuf::from(percent_decode(path));
        let p = path.clone();
        let (digest, _) = tokio::task::spawn_blocking(move || leo_store::digest_path(&p))
            .await?
            .with_context(|| format!("reading input {uri}"))?;
        self.digests
            .insert(uri.to_string(), (digest.clone(), path.clone()));
        Ok((digest, path))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(Ok(v)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The fingerprint of a stage whose dependencies are all done, with its resolved inputs.
pub(crate) async fn fingerprint_stage(
    checked: &Checked,
    stage: &str,
    done: &HashMap<String, DoneStage>,
    externals: &mut Externals,
) -> Result<(Fingerprint, Vec<ResolvedInput>)> {
    let spec = &checked.workflow.stages[stage];
    let mut inputs = Vec::new();
    let mut digests = BTreeMap::new();
    let mut from_stages = std::collections::BTreeSet::new();
    for (name, reference) in &spec.inputs {
        let resolved = match reference {
            InputRef::Stage {
                stage: from,
                output,
            } => {
                from_stages.insert(from.clone());
                let d = done
                    .get(from)
                    .and_then(|d| d.outputs.get(output))
                    .with_context(|| {
                        format!("stage {stage}: input `{name}` ({from}.{output}) is not available")
                    })?;
                ResolvedInput {
                    name: name.clone(),
                    digest: d.clone(),
                    external: None,
                }
            }
            InputRef::External { uri } => {
                let (digest, path) = externals
                    .digest(uri)
                    .await
                    .with_context(|| format!("stage {stage}"))?;
                ResolvedInput {
                    name: name.clone(),
                    digest,
                    external: Some((uri.clone(), path)),
                }
            }
        };
        digests.insert(name.clone(), resolved.digest.clone());
        inputs.push(resolved);
    }
    let mut needs = BTreeMap::new();
    for dep in &spec.needs {
        if !from_stages.contains(dep) {
            let d = done
                .get(dep)
                .with_context(|| format!("stage {stage}: dependency {dep} is not done"))?;
            needs.insert(dep.clone(), d.fingerprint.clone());
        }
    }
    let fp = Fingerprint::compute(
        &checked.plugins[stage],
        &spec.params,
        &spec.env,
        &digests,
        &needs,
    );
    Ok((fp, inputs))
}

/// A previous success with this fingerprint whose artifacts are all still in the store.
pub(crate) async fn lookup_cache(
    state: &State,
    store: &ArtifactStore,
    fingerprint: &str,
    expected_outputs: &[String],
) -> Result<Option<(String, BTreeMap<String, String>)>> {
    let Some((run_id, outputs)) = state.find_cached(fingerprint).await? else {
        return Ok(None);
    };
    let outputs: BTreeMap<String, String> = outputs.into_iter().collect();
    if expected_outputs.iter().any(|o| !outputs.contains_key(o)) {
        return Ok(None);
    }
    for digest in outputs.values() {
        if !store.exists(digest).await? {
            return Ok(None);
        }
    }
    Ok(Some((run_id, outputs)))
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Waiting,
    Backoff,
    Running,
    Done,
    Failed,
    Skipped,
    Cancelled,
}

enum Msg {
    Finished {
        stage: String,
        grant: Grant,
        number: u32,
        outcome: Result<AttemptOutcome>,
    },
    RetryReady {
        stage: String,
    },
}

pub(crate) async fn execute(
    run_id: &str,
    checked: Checked,
    state: &State,
    store: &ArtifactStore,
    opts: &EngineOptions,
    observer: Arc<dyn Observer>,
    mut cancel: watch::Receiver<bool>,
) -> Result<RunOutcome> {
    let checked = Arc::new(checked);
    let order: Vec<String> = checked.dag.topo_order().to_vec();
    observer.on(EngineEvent::RunStarted {
        run_id: run_id.to_string(),
        stages: order.len(),
    });

    // Stages already done in this run (resume) are kept when their artifacts still exist.
    let mut done: HashMap<String, DoneStage> = HashMap::new();
    let mut nodes: HashMap<String, Node> =
        order.iter().map(|s| (s.clone(), Node::Waiting)).collect();
    for rec in state.stages(run_id).await? {
        if rec.status.is_done() {
            let outputs: BTreeMap<String, String> = state
                .stage_outputs(run_id, &rec.name)
                .await?
                .into_iter()
                .collect();
            let mut present = true;
            for d in outputs.values() {
                present &= store.exists(d).await?;
            }
            if let (true, Some(fp)) = (present, rec.fingerprint.clone()) {
                done.insert(
                    rec.name.clone(),
                    DoneStage {
                        fingerprint: fp,
                        outputs,
                    },
                );
                nodes.insert(rec.name.clone(), Node::Done);
            }
        }
    }

    let heartbeat = {
        let state = state.clone();
        let run_id = run_id.to_string();
        let every = opts.heartbeat;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = state.heartbeat(&run_id).await {
                    tracing::warn!("heartbeat for run {run_id} failed: {e:#}");
                }
            }
        })
    };

    let mut pool = Pool::new(&opts.machine);
    let mut externals = Externals::default();
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut running = 0usize;
    let mut backing_off = 0usize;
    let mut started_at: HashMap<String, Instant> = HashMap::new();
    let mut fingerprints: HashMap<String, Fingerprint> = HashMap::new();
    let mut inputs_of: HashMap<String, Vec<ResolvedInput>> = HashMap::new();
    let mut cancelled = *cancel.borrow();
    // Failed attempts per stage in this engine session; `retries` counts against these.
    let mut failures: HashMap<String, u32> = HashMap::new();

    loop {
        // Start what can start. Cache hits finish at once and may unblock more, hence the loop.
        let mut progressed = true;
        while progressed && !cancelled {
            progressed = false;
            for name in &order {
                if nodes[name] != Node::Waiting {
                    continue;
                }
                let deps = checked.dag.dependencies(name);
                if deps
                    .iter()
                    .any(|d| matches!(nodes[d], Node::Failed | Node::Skipped | Node::Cancelled))
                {
                    nodes.insert(name.clone(), Node::Skipped);
                    record_status(
                        state,
                        run_id,
                        name,
                        StageStatus::Skipped,
                        Some("an upstream stage failed"),
                    )
                    .await?;
                    progressed = true;
                    continue;
                }
                if !deps.iter().all(|d| nodes[d] == Node::Done) {
                    continue;
                }
                if !fingerprints.contains_key(name) {
                    let (fp, inputs) =
                        match fingerprint_stage(&checked, name, &done, &mut externals).await {
                            Ok(x) => x,
                            Err(e) => {
                                let msg = format!("{e:#}");
                                nodes.insert(name.clone(), Node::Failed);
                                record_status(state, run_id, name, StageStatus::Failed, Some(&msg))
                                    .await?;
                                observer.on(EngineEvent::StageFinished {
                                    stage: name.clone(),
                                    status: StageStatus::Failed,
                                    seconds: 0.0,
                                    error: Some(msg),
                                });
                                progressed = true;
                                continue;
                            }
                        };
                    let outputs = &checked.plugins[name].outputs;
                    if let Some((from_run, outs)) =
                        lookup_cache(state, store, &fp.hash, outputs).await?
                    {
                        let fp_json = fp.canonical_json();
                        state
                            .upsert_stage(&StageUpdate {
                                run_id,
                                stage: name,
                                status: StageStatus::Pending,
                                fingerprint: Some(&fp.hash),
                                fingerprint_json: Some(&fp_json),
                                cached_from_run: None,
                                error: None,
                            })
                            .await?;
                        let arts: Vec<OutputArtifact> = outs
                            .iter()
                            .map(|(n, d)| OutputArtifact {
                                name: n.clone(),
                                digest: d.clone(),
                                size: 0,
                                files: 0,
                            })
                            .collect();
                        state
                            .complete_stage(&StageCompletion {
                                run_id,
                                stage: name,
                                status: StageStatus::Cached,
                                attempt_id: None,
                                cached_from_run: Some(&from_run),
                                outputs: &arts,
                            })
                            .await?;
                        done.insert(
                            name.clone(),
                            DoneStage {
                                fingerprint: fp.hash.clone(),
                                outputs: outs,
                            },
                        );
                        nodes.insert(name.clone(), Node::Done);
                        observer.on(EngineEvent::StageCached {
                            stage: name.clone(),
                            from_run,
                        });
                        progressed = true;
                        continue;
                    }
                    let fp_json = fp.canonical_json();
                    state
                        .upsert_stage(&StageUpdate {
                            run_id,
                            stage: name,
                            status: StageStatus::Pending,
                            fingerprint: Some(&fp.hash),
                            fingerprint_json: Some(&fp_json),
                            cached_from_run: None,
                            error: None,
                        })
                        .await?;
                    fingerprints.insert(name.clone(), fp);
                    inputs_of.insert(name.clone(), inputs);
                }
                let resources = checked.workflow.stages[name].resources;
                if let Err(why) = pool.feasible(&resources) {
                    nodes.insert(name.clone(), Node::Failed);
                    record_status(state, run_id, name, StageStatus::Failed, Some(&why)).await?;
                    observer.on(EngineEvent::StageFinished {
                        stage: name.clone(),
                        status: StageStatus::Failed,
                        seconds: 0.0,
                        error: Some(why),
                    });
                    progressed = true;
                    continue;
                }
                let Some(grant) = pool.try_acquire(&resources) else {
                    continue;
                };
                let number = state.attempt_count(run_id, name).await? + 1;
                let resume_from = state.latest_checkpoint(run_id, name).await?;
                let spec = AttemptSpec {
                    run_id: run_id.to_string(),
                    stage: name.clone(),
                    number,
                    checked: checked.clone(),
                    inputs: inputs_of[name].clone(),
                    resume_from,
                    gpus: grant.gpus.clone(),
                    state: state.clone(),
                    store: store.clone(),
                    observer: observer.clone(),
                    work_dir: opts
                        .work_root
                        .join(run_id)
                        .join(name)
                        .join(format!("attempt-{number}")),
                    grace: opts.grace,
                    cancel: cancel.clone(),
                };
                nodes.insert(name.clone(), Node::Running);
                started_at.entry(name.clone()).or_insert_with(Instant::now);
                running += 1;
                let tx = tx.clone();
                let stage = name.clone();
                tokio::spawn(async move {
                    let outcome = attempt::run(spec).await;
                    let _ = tx.send(Msg::Finished {
                        stage,
                        grant,
                        number,
                        outcome,
                    });
                });
            }
        }

        if running == 0 && (backing_off == 0 || cancelled) {
            break;
        }

        let msg = tokio::select! {
            m = rx.recv() => m,
            changed = cancel.changed(), if !cancelled => {
                if changed.is_err() || *cancel.borrow() {
                    cancelled = true;
                    observer.on(EngineEvent::Cancelling);
                }
                continue;
            }
        };
        let Some(msg) = msg else { break };
        match msg {
            Msg::RetryReady { stage } => {
                backing_off -= 1;
                if nodes[&stage] == Node::Backoff {
                    nodes.insert(stage, Node::Waiting);
                }
            }
            Msg::Finished {
                stage,
                grant,
                number,
                outcome,
            } => {
                running -= 1;
                pool.release(grant);
                let seconds = started_at
                    .get(&stage)
                    .map_or(0.0, |t| t.elapsed().as_secs_f64());
                let outcome = outcome.unwrap_or_else(|e| AttemptOutcome::Failed {
                    error: format!("{e:#}"),
                });
                match outcome {
                    AttemptOutcome::Succeeded { outputs } => {
                        let fp = fingerprints[&stage].hash.clone();
                        done.insert(
                            stage.clone(),
                            DoneStage {
                                fingerprint: fp,
                                outputs,
                            },
                        );
                        nodes.insert(stage.clone(), Node::Done);
                        observer.on(EngineEvent::StageFinished {
                            stage,
                            status: StageStatus::Succeeded,
                            seconds,
                            error: None,
                        });
                    }
                    AttemptOutcome::Cancelled => {
                        nodes.insert(stage.clone(), Node::Cancelled);
                        record_status(
                            state,
                            run_id,
                            &stage,
                            StageStatus::Cancelled,
                            Some("cancelled"),
                        )
                        .await?;
                        observer.on(EngineEvent::StageFinished {
                            stage,
                            status: StageStatus::Cancelled,
                            seconds,
                            error: None,
                        });
                    }
                    AttemptOutcome::Failed { error } => {
                        let retries = checked.workflow.stages[&stage].retries;
                        let failed = failures.entry(stage.clone()).or_insert(0u32);
                        *failed += 1;
                        if *failed <= retries && !cancelled {
                            let delay = backoff(opts.retry_base, *failed);
                            nodes.insert(stage.clone(), Node::Backoff);
                            record_status(
                                state,
                                run_id,
                                &stage,
                                StageStatus::Pending,
                                Some(&error),
                            )
                            .await?;
                            observer.on(EngineEvent::StageRetrying {
                                stage: stage.clone(),
                                attempt: number + 1,
                                error,
                                delay_ms: delay.as_millis() as u64,
                            });
                            backing_off += 1;
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let _ = tx.send(Msg::RetryReady { stage });
                            });
                        } else {
                            nodes.insert(stage.clone(), Node::Failed);
                            record_status(state, run_id, &stage, StageStatus::Failed, Some(&error))
                                .await?;
                            observer.on(EngineEvent::StageFinished {
                                stage,
                                status: StageStatus::Failed,
                                seconds,
                                error: Some(error),
                            });
                        }
                    }
                }
            }
        }
    }
    heartbeat.abort();

    let status = if nodes.values().all(|n| *n == Node::Done) {
        RunStatus::Succeeded
    } else if cancelled {
        RunStatus::Cancelled
    } else {
        RunStatus::Failed
    };
    state.set_run_status(run_id, status).await?;
    Ok(RunOutcome {
        run_id: run_id.to_string(),
        status,
    })
}

fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(Duration::from_secs(60));
    // Jitter in [0.5, 1.5) from the clock's low bits: retries of parallel stages spread out.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = 0.5 + f64::from(nanos % 1000) / 1000.0;
    capped.mul_f64(jitter)
}

async fn record_status(
    state: &State,
    run_id: &str,
    stage: &str,
    status: StageStatus,
    error: Option<&str>,
) -> Result<()> {
    state
        .upsert_stage(&StageUpdate {
            run_id,
            stage,
            status,
            fingerprint: None,
            fingerprint_json: None,
            cached_from_run: None,
            error,
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let d1 = backoff(base, 1);
        assert!(d1 >= Duration::from_millis(50) && d1 < Duration::from_millis(150));
        let d3 = backoff(base, 3);
        assert!(d3 >= Duration::from_millis(200) && d3 < Duration::from_millis(600));
        assert!(backoff(base, 30) <= Duration::from_secs(90));
    }

    #[test]
    fn file_uris_are_percent_decoded() {
        assert_eq!(percent_decode("/data/a%20b.txt"), "/data/a b.txt");
        assert_eq!(percent_decode("/x%"), "/x%");
    }
}
