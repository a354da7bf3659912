//! The run loop: starts every stage whose dependencies are done and whose resources are free,
//! reuses cached results, retries failures with backoff, and cancels cleanly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use leo_spec::{Executor, InputRef};
use leo_state::{
    Lease, OutputArtifact, RunStatus, StageCompletion, StageStatus, StageUpdate, State,
};
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
    /// For external inputs: the URI to record (an `hf://` one at its commit) and the local path
    /// to hand to the plugin.
    pub external: Option<(String, PathBuf)>,
}

/// Digests of external inputs: computed once per process, and reused across runs while the
/// files' stat signature is unchanged (raw corpora are large; hashing them every run is not).
/// `hf://` inputs are first resolved into the Hugging Face cache (downloaded, unless this is
/// only a plan), then digested like local files.
pub(crate) struct Externals {
    digests: HashMap<String, External>,
    state: State,
    /// Whether `hf://` inputs may be downloaded (a run) or only looked up (`leo plan`).
    download: bool,
    /// Made on the first `hf://` input, from the environment (`HF_ENDPOINT`, `HF_TOKEN`, …).
    hub: Option<Arc<leo_hub::Hub>>,
}

/// An external input, resolved.
#[derive(Debug, Clone)]
pub(crate) struct External {
    pub digest: String,
    /// Where the plugin reads it.
    pub path: PathBuf,
    /// The URI the lineage records: as written for `file://`, at its commit for `hf://`.
    pub recorded_uri: String,
}

/// How long `leo plan` waits for the Hub before it says why it cannot tell.
const PLAN_HUB_TIMEOUT: Duration = Duration::from_secs(5);

impl Externals {
    /// For a run: `hf://` inputs are downloaded.
    pub fn new(state: &State) -> Externals {
        Externals {
            digests: HashMap::new(),
            state: state.clone(),
            download: true,
            hub: None,
        }
    }

    /// For `leo plan`: nothing is downloaded; an `hf://` input whose snapshot is not complete
    /// in the cache is an error that says so (the plan shows it as the stage's reason).
    pub fn for_plan(state: &State) -> Externals {
        Externals {
            download: false,
            ..Externals::new(state)
        }
    }

    pub async fn digest(&mut self, uri: &str) -> Result<External> {
        if let Some(d) = self.digests.get(uri) {
            return Ok(d.clone());
        }
        let (path, recorded_uri) = if uri.starts_with("hf://") {
            self.hf_snapshot(uri).await?
        } else if let Some(path) = uri.strip_prefix("file://") {
            (PathBuf::from(percent_decode(path)), uri.to_string())
        } else {
            bail!("input `{uri}`: only file:// and hf:// inputs are supported so far");
        };
        // Keyed by the recorded URI: a pinned hf:// URI names bytes that never change.
        let key = recorded_uri.clone();
        let p = path.clone();
        let signature = tokio::task::spawn_blocking(move || leo_store::stat_signature(&p))
            .await?
            .with_context(|| format!("reading input {uri}"))?;
        let known = match &signature {
            Some(sig) => self.state.external_digest(&key, sig).await?,
            None => None,
        };
        let digest = match known {
            Some(d) => d,
            None => {
                let p = path.clone();
                let (digest, _) = tokio::task::spawn_blocking(move || leo_store::digest_path(&p))
                    .await?
                    .with_context(|| format!("reading input {uri}"))?;
                let mut signature = signature;
                if signature.is_none() && uri.starts_with("hf://") {
                    // Just downloaded, so too young to trust its signature. Blobs are written
                    // once and renamed into place, never changed: the signature after hashing
                    // (seconds, for a model) holds, and the model is not hashed again next run.
                    let p = path.clone();
                    signature = tokio::task::spawn_blocking(move || leo_store::stat_signature(&p))
                        .await?
                        .with_context(|| format!("reading input {uri}"))?;
                }
                if let Some(sig) = &signature {
                    self.state
                        .record_external_digest(&key, sig, &digest)
                        .await?;
                }
                digest
            }
        };
        let external = External {
            digest,
            path,
            recorded_uri,
        };
        self.digests.insert(uri.to_string(), external.clone());
        Ok(external)
    }

    /// The snapshot path of an `hf://` input and its URI at the resolved commit.
    async fn hf_snapshot(&mut self, uri: &str) -> Result<(PathBuf, String)> {
        let parsed = leo_hub::HfUri::parse(uri)?;
        let hub = match &self.hub {
            Some(h) => h.clone(),
            None => {
                let mut settings = leo_hub::HubSettings::from_env();
                if !self.download {
                    settings.api_timeout = PLAN_HUB_TIMEOUT;
                    settings.retries = 0;
                }
                let hub = Arc::new(leo_hub::Hub::new(settings)?);
                self.hub = Some(hub.clone());
                hub
            }
        };
        let resolved = if self.download {
            hub.resolve(&parsed).await?
        } else {
            match hub.status(&parsed).await? {
                leo_hub::CacheStatus::Complete(r) => r,
                leo_hub::CacheStatus::Missing { missing, total, .. } => {
                    let files = if total == 1 { "file" } else { "files" };
                    if missing == total {
                        bail!("input {uri} is not downloaded yet ({total} {files})");
                    }
                    bail!(
                        "input {uri} is not downloaded yet ({missing} of {total} {files} missing)"
                    );
                }
            }
        };
        Ok((resolved.local_path.clone(), resolved.pinned_uri()))
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
                let external = externals
                    .digest(uri)
                    .await
                    .with_context(|| format!("stage {stage}"))?;
                ResolvedInput {
                    name: name.clone(),
                    digest: external.digest,
                    external: Some((external.recorded_uri, external.path)),
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

#[derive(Debug, Clone, Copy, PartialEq)]
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
        stage: usize,
        number: u32,
        outcome: Result<AttemptOutcome>,
    },
    RetryReady {
        stage: usize,
    },
    /// An attempt's process has exited: its resources are free.
    Release {
        grant: Grant,
    },
}

/// One run's scheduling state. Stages are numbered by their position in the topological order;
/// `remaining[i]` counts dependencies of `i` not yet done, and `ready` holds waiting stages
/// whose dependencies are all done, so each event costs work proportional to its neighbours.
struct Scheduler<'a> {
    run_id: &'a str,
    checked: Arc<Checked>,
    state: &'a State,
    store: &'a ArtifactStore,
    opts: &'a EngineOptions,
    observer: Arc<dyn Observer>,
    order: Vec<String>,
    dependents: Vec<Vec<usize>>,
    remaining: Vec<usize>,
    nodes: Vec<Node>,
    ready: BTreeSet<usize>,
    done: HashMap<String, DoneStage>,
    fingerprints: HashMap<usize, Fingerprint>,
    inputs: HashMap<usize, Vec<ResolvedInput>>,
    externals: Externals,
    pool: Pool,
    /// Failed attempts per stage in this engine session; `retries` counts against these.
    failures: Vec<u32>,
    /// Interrupted attempts per stage (preemption, node failure); the resubmission limit
    /// counts against these, never against `retries`.
    interruptions: Vec<u32>,
    started: Vec<Option<Instant>>,
    running: usize,
    backing_off: usize,
    /// Leases held for running attempts (released when they fail; a success releases its lease
    /// in the transaction that records it).
    leases: HashMap<usize, Lease>,
    /// Working folders of succeeded attempts, removed when the run ends (deleting them one by
    /// one while the run creates new ones slows some file systems down).
    cleanup: Vec<PathBuf>,
}

/// Folder (under the run's work folder) of shared materialised inputs.
const SHARED_INPUTS: &str = "inputs";

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
    let index: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = order
        .iter()
        .map(|s| {
            checked
                .dag
                .dependencies(s)
                .iter()
                .map(|d| index[d.as_str()])
                .collect()
        })
        .collect();
    let mut dependents = vec![Vec::new(); order.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }

    // Stages already done in this run (resume) are kept when their artifacts still exist and
    // every stage upstream of them is kept too: a stage whose upstream reruns runs again (and is
    // a cache hit when its inputs come out the same).
    let mut nodes = vec![Node::Waiting; order.len()];
    let mut done: HashMap<String, DoneStage> = HashMap::new();
    let records = state.stages_by_name(run_id).await?;
    for (i, name) in order.iter().enumerate() {
        let Some(rec) = records.get(name) else {
            continue;
        };
        if !rec.status.is_done() || deps[i].iter().any(|&d| nodes[d] != Node::Done) {
            continue;
        }
        let outputs: BTreeMap<String, String> = state
            .stage_outputs(run_id, name)
            .await?
            .into_iter()
            .collect();
        let mut present = true;
        for d in outputs.values() {
            present &= store.exists(d).await?;
        }
        if let (true, Some(fp)) = (present, rec.fingerprint.clone()) {
            done.insert(
                name.clone(),
                DoneStage {
                    fingerprint: fp,
                    outputs,
                },
            );
            nodes[i] = Node::Done;
        }
    }
    let remaining: Vec<usize> = deps
        .iter()
        .map(|ds| ds.iter().filter(|&&d| nodes[d] != Node::Done).count())
        .collect();
    let ready = (0..order.len())
        .filter(|&i| nodes[i] == Node::Waiting && remaining[i] == 0)
        .collect();

    let heartbeat = {
        let state = state.clone();
        let run_id = run_id.to_string();
        let every = opts.heartbeat;
        let ttl = opts.lease_ttl;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = state.heartbeat(&run_id).await {
                    tracing::warn!("heartbeat for run {run_id} failed: {e:#}");
                }
                let until = leo_state::now_ms() + ttl.as_millis() as i64;
                if let Err(e) = state.renew_leases(&run_id, until).await {
                    tracing::warn!("renewing the leases of run {run_id} failed: {e:#}");
                }
            }
        })
    };

    let n = order.len();
    let mut s = Scheduler {
        run_id,
        checked: checked.clone(),
        state,
        store,
        opts,
        observer: observer.clone(),
        order,
        dependents,
        remaining,
        nodes,
        ready,
        done,
        fingerprints: HashMap::new(),
        inputs: HashMap::new(),
        externals: Externals::new(state),
        pool: Pool::new(&opts.machine),
        failures: vec![0; n],
        interruptions: vec![0; n],
        started: vec![None; n],
        running: 0,
        backing_off: 0,
        leases: HashMap::new(),
        cleanup: Vec::new(),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    // Attempts listen to the scheduler's own stop signal: the user's cancel is forwarded to it,
    // and an internal error raises it too.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut cancelled = *cancel.borrow();
    let mut cancel_open = true;
    let result: Result<()> = async {
        loop {
            if !cancelled {
                s.start_ready(&tx, &stop_rx).await?;
            }
            if s.running == 0 && (s.backing_off == 0 || cancelled) {
                return Ok(());
            }
            let msg = tokio::select! {
                m = rx.recv() => m,
                changed = cancel.changed(), if cancel_open && !cancelled => {
                    match changed {
                        Err(_) => cancel_open = false,
                        Ok(()) if *cancel.borrow() => {
                            cancelled = true;
                            let _ = stop_tx.send(true);
                            observer.on(EngineEvent::Cancelling);
                        }
                        Ok(()) => {}
                    }
                    continue;
                }
            };
            let Some(msg) = msg else { return Ok(()) };
            match msg {
                Msg::RetryReady { stage } => {
                    s.backing_off -= 1;
                    if s.nodes[stage] == Node::Backoff {
                        s.nodes[stage] = Node::Waiting;
                        s.ready.insert(stage);
                    }
                }
                Msg::Release { grant } => s.pool.release(grant),
                Msg::Finished {
                    stage,
                    number,
                    outcome,
                } => {
                    s.running -= 1;
                    s.on_finished(stage, number, outcome, cancelled, &tx)
                        .await?;
                }
            }
        }
    }
    .await;
    if result.is_err() {
        // Stop what is running and wait for it before giving up: no attempt outlives the run.
        let _ = stop_tx.send(true);
        while s.running > 0 {
            match rx.recv().await {
                Some(Msg::Finished { .. }) => s.running -= 1,
                Some(_) => {}
                None => break,
            }
        }
        let _ = state.set_run_status(run_id, RunStatus::Failed).await;
    }
    heartbeat.abort();
    let mut cleanup = std::mem::take(&mut s.cleanup);
    cleanup.push(opts.work_root.join(run_id).join(SHARED_INPUTS));
    let _ = tokio::task::spawn_blocking(move || {
        for dir in cleanup {
            let _ = leo_store::remove_shared(&dir);
        }
    })
    .await;
    result?;

    let status = if s.nodes.iter().all(|n| *n == Node::Done) {
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

impl Scheduler<'_> {
    /// Starts every ready stage that fits; cache hits complete at once and may ready more.
    async fn start_ready(
        &mut self,
        tx: &mpsc::UnboundedSender<Msg>,
        cancel: &watch::Receiver<bool>,
    ) -> Result<()> {
        let mut progressed = true;
        while progressed {
            progressed = false;
            let candidates: Vec<usize> = self.ready.iter().copied().collect();
            for i in candidates {
                if self.try_start(i, tx, cancel).await? {
                    self.ready.remove(&i);
                    progressed = true;
                }
            }
        }
        Ok(())
    }

    /// Returns whether the stage left the ready set (started, cached or failed).
    async fn try_start(
        &mut self,
        i: usize,
        tx: &mpsc::UnboundedSender<Msg>,
        cancel: &watch::Receiver<bool>,
    ) -> Result<bool> {
        let name = self.order[i].clone();
        let (run_id, state) = (self.run_id, self.state);
        if !self.fingerprints.contains_key(&i) {
            let (fp, inputs) = match fingerprint_stage(
                &self.checked,
                &name,
                &self.done,
                &mut self.externals,
            )
            .await
            {
                Ok(x) => x,
                Err(e) => {
                    self.fail(i, Node::Failed, format!("{e:#}"), 0.0).await?;
                    return Ok(true);
                }
            };
            let outputs = &self.checked.plugins[&name].outputs;
            if let Some((from_run, outs)) =
                lookup_cache(state, self.store, &fp.hash, outputs).await?
            {
                self.complete_cached(i, &fp, from_run, outs).await?;
                return Ok(true);
            }
            self.fingerprints.insert(i, fp);
            self.inputs.insert(i, inputs);
        }
        let resources = self.checked.workflow.stages[&name].resources;
        // A Slurm stage takes nothing from this machine: the cluster's scheduler places it.
        let grant = if self.checked.workflow.stages[&name].executor == Executor::Slurm {
            Grant::default()
        } else {
            if let Err(why) = self.pool.feasible(&resources) {
                self.fail(i, Node::Failed, why, 0.0).await?;
                return Ok(true);
            }
            let Some(grant) = self.pool.try_acquire(&resources) else {
                return Ok(false);
            };
            grant
        };
        // The lease makes this engine the only one running this work (same fingerprint) among
        // all engines that share the state; whoever else wants it waits for the result.
        let fp = self.fingerprints[&i].clone();
        let until = leo_state::now_ms() + self.opts.lease_ttl.as_millis() as i64;
        let Some(lease) = state.acquire_lease(&fp.hash, run_id, until).await? else {
            self.pool.release(grant);
            self.observer
                .on(EngineEvent::StageWaitingForLease { stage: name });
            self.wait(i, self.opts.heartbeat, tx);
            return Ok(true);
        };
        // Under the lease, look again: another engine may have finished this work meanwhile.
        let outputs = &self.checked.plugins[&name].outputs;
        if let Some((from_run, outs)) = lookup_cache(state, self.store, &fp.hash, outputs).await? {
            state.release_lease(&lease).await?;
            self.pool.release(grant);
            self.complete_cached(i, &fp, from_run, outs).await?;
            return Ok(true);
        }
        let number = state.attempt_count(run_id, &name).await? + 1;
        let resume_from = state.latest_checkpoint(run_id, &name).await?;
        let spec = AttemptSpec {
            run_id: run_id.to_string(),
            stage: name.clone(),
            number,
            fingerprint: (
                self.fingerprints[&i].hash.clone(),
                self.fingerprints[&i].canonical_json(),
            ),
            checked: self.checked.clone(),
            inputs: self.inputs[&i].clone(),
            resume_from,
            gpus: grant.gpus.clone(),
            state: state.clone(),
            store: self.store.clone(),
            observer: self.observer.clone(),
            work_dir: crate::attempt_dir(&self.opts.work_root, run_id, &name, number),
            shared_dir: self.opts.work_root.join(run_id).join(SHARED_INPUTS),
            grace: self.opts.grace,
            cancel: cancel.clone(),
            lease: Some(lease.clone()),
        };
        self.leases.insert(i, lease);
        self.nodes[i] = Node::Running;
        self.started[i].get_or_insert_with(Instant::now);
        self.running += 1;
        // The grant goes back as soon as the process is gone, while the engine still stores
        // the attempt's outputs: the next stage need not wait for that bookkeeping.
        let release_tx = tx.clone();
        let release = attempt::OnExit::new(move || {
            let _ = release_tx.send(Msg::Release { grant });
        });
        let tx = tx.clone();
        let task = tokio::spawn(attempt::run(spec, release));
        tokio::spawn(async move {
            // A panicking attempt task still reports, so the run cannot wait for it forever.
            let outcome = task.await.unwrap_or_else(|e| {
                Err(anyhow::anyhow!(
                    "the engine task running this attempt failed: {e}"
                ))
            });
            let _ = tx.send(Msg::Finished {
                stage: i,
                number,
                outcome,
            });
        });
        Ok(true)
    }

    /// Records a cache hit: the stage's outputs are those of an earlier success.
    async fn complete_cached(
        &mut self,
        i: usize,
        fp: &Fingerprint,
        from_run: String,
        outs: BTreeMap<String, String>,
    ) -> Result<()> {
        let name = self.order[i].clone();
        let fp_json = fp.canonical_json();
        let arts: Vec<OutputArtifact> = outs
            .iter()
            .map(|(n, d)| OutputArtifact {
                name: n.clone(),
                digest: d.clone(),
                size: 0,
                files: 0,
            })
            .collect();
        self.state
            .complete_stage(&StageCompletion {
                run_id: self.run_id,
                stage: &name,
                status: StageStatus::Cached,
                attempt_id: None,
                cached_from_run: Some(&from_run),
                outputs: &arts,
                fingerprint: Some((&fp.hash, &fp_json)),
                lease: None,
            })
            .await?;
        self.observer.on(EngineEvent::StageCached {
            stage: name,
            from_run,
        });
        self.mark_done(i, fp.hash.clone(), outs);
        Ok(())
    }

    /// Parks a stage for `delay`, then makes it ready again (retry backoff, lease waits).
    fn wait(&mut self, i: usize, delay: Duration, tx: &mpsc::UnboundedSender<Msg>) {
        self.nodes[i] = Node::Backoff;
        self.backing_off += 1;
        let tx = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Msg::RetryReady { stage: i });
        });
    }

    async fn on_finished(
        &mut self,
        i: usize,
        number: u32,
        outcome: Result<AttemptOutcome>,
        cancelled: bool,
        tx: &mpsc::UnboundedSender<Msg>,
    ) -> Result<()> {
        let name = self.order[i].clone();
        let seconds = self.started[i].map_or(0.0, |t| t.elapsed().as_secs_f64());
        let outcome = outcome.unwrap_or_else(|e| AttemptOutcome::Failed {
            error: format!("{e:#}"),
        });
        if let Some(lease) = self.leases.remove(&i) {
            // A success released its lease when it was recorded.
            if !matches!(outcome, AttemptOutcome::Succeeded { .. }) {
                if let Err(e) = self.state.release_lease(&lease).await {
                    tracing::warn!("releasing the lease of stage {name} failed: {e:#}");
                }
            }
        }
        match outcome {
            AttemptOutcome::Succeeded { outputs } => {
                let fp = self.fingerprints[&i].hash.clone();
                let outputs = outputs.into_iter().map(|o| (o.name, o.digest)).collect();
                // Its outputs are in the store: the working folder goes when the run ends.
                self.cleanup.push(crate::attempt_dir(
                    &self.opts.work_root,
                    self.run_id,
                    &name,
                    number,
                ));
                self.observer.on(EngineEvent::StageFinished {
                    stage: name,
                    status: StageStatus::Succeeded,
                    seconds,
                    error: None,
                });
                self.mark_done(i, fp, outputs);
            }
            AttemptOutcome::Cancelled => {
                self.fail(i, Node::Cancelled, "cancelled".to_string(), seconds)
                    .await?;
            }
            AttemptOutcome::Interrupted {
                error,
                resubmits,
                progressed,
            } => {
                // Interruptions in a row without progress count; one after a new checkpoint
                // starts the count again (a long training on a capped partition goes on).
                self.interruptions[i] = if progressed {
                    1
                } else {
                    self.interruptions[i] + 1
                };
                if self.interruptions[i] <= resubmits && !cancelled {
                    // Straight back into the queue: nothing is wrong with the stage.
                    self.retry(i, number, error, Duration::ZERO, tx).await?;
                } else {
                    let error = format!("{error} (after {resubmits} resubmissions)");
                    self.fail(i, Node::Failed, error, seconds).await?;
                }
            }
            AttemptOutcome::Failed { error } => {
                self.failures[i] += 1;
                let retries = self.checked.workflow.stages[&name].retries;
                if self.failures[i] <= retries && !cancelled {
                    let delay = backoff(self.opts.retry_base, self.failures[i]);
                    self.retry(i, number, error, delay, tx).await?;
                } else {
                    self.fail(i, Node::Failed, error, seconds).await?;
                }
            }
        }
        Ok(())
    }

    /// Records that attempt `number` of stage `i` failed with `error` and starts the next one
    /// after `delay`.
    async fn retry(
        &mut self,
        i: usize,
        number: u32,
        error: String,
        delay: Duration,
        tx: &mpsc::UnboundedSender<Msg>,
    ) -> Result<()> {
        let name = self.order[i].clone();
        record_status(
            self.state,
            self.run_id,
            &name,
            StageStatus::Pending,
            Some(&error),
        )
        .await?;
        self.observer.on(EngineEvent::StageRetrying {
            stage: name,
            attempt: number + 1,
            error,
            delay_ms: delay.as_millis() as u64,
        });
        self.wait(i, delay, tx);
        Ok(())
    }

    fn mark_done(&mut self, i: usize, fingerprint: String, outputs: BTreeMap<String, String>) {
        self.nodes[i] = Node::Done;
        self.done.insert(
            self.order[i].clone(),
            DoneStage {
                fingerprint,
                outputs,
            },
        );
        for k in 0..self.dependents[i].len() {
            let j = self.dependents[i][k];
            self.remaining[j] -= 1;
            if self.remaining[j] == 0 && self.nodes[j] == Node::Waiting {
                self.ready.insert(j);
            }
        }
    }

    /// Records a failed or cancelled stage and skips everything downstream of it.
    async fn fail(&mut self, i: usize, node: Node, error: String, seconds: f64) -> Result<()> {
        let name = self.order[i].clone();
        self.nodes[i] = node;
        self.ready.remove(&i);
        let status = if node == Node::Cancelled {
            StageStatus::Cancelled
        } else {
            StageStatus::Failed
        };
        record_status(self.state, self.run_id, &name, status, Some(&error)).await?;
        self.observer.on(EngineEvent::StageFinished {
            stage: name.clone(),
            status,
            seconds,
            error: (node != Node::Cancelled).then_some(error),
        });
        let mut stack = self.dependents[i].clone();
        while let Some(j) = stack.pop() {
            if self.nodes[j] != Node::Waiting {
                continue;
            }
            self.nodes[j] = Node::Skipped;
            self.ready.remove(&j);
            let reason = format!("upstream stage `{name}` {}", status.as_str());
            record_status(
                self.state,
                self.run_id,
                &self.order[j],
                StageStatus::Skipped,
                Some(&reason),
            )
            .await?;
            stack.extend(self.dependents[j].iter().copied());
        }
        Ok(())
    }
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
