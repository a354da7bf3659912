//! `run`, `resume`, `plan`, `validate`, `graph`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use leo_engine::{EngineOptions, Machine, PlanStatus, RunOutcome};
use leo_state::{RunStatus, State};
use leo_store::ArtifactStore;
use tokio::sync::watch;

use super::{catalog, load_checked, state_location, work_root, DEFAULT_STORE};
use crate::cli::{GraphFormatArg, MachineArgs, RunArgs};
use crate::progress::Progress;

pub fn validate(file: &Path) -> Result<ExitCode> {
    let checked = load_checked(file)?;
    println!(
        "{}: workflow `{}` is valid ({} stages)",
        file.display(),
        checked.workflow.name,
        checked.workflow.stages.len()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn graph(file: &Path, format: GraphFormatArg) -> Result<ExitCode> {
    let loaded = leo_spec::load_file(file)?;
    let format = match format {
        GraphFormatArg::Dot => leo_spec::GraphFormat::Dot,
        GraphFormatArg::Mermaid => leo_spec::GraphFormat::Mermaid,
    };
    print!("{}", loaded.dag.render(&loaded.workflow, format));
    Ok(ExitCode::SUCCESS)
}

fn engine_options(machine: &MachineArgs, state_loc: &str) -> EngineOptions {
    // 30 s unless LEO_LEASE_TTL (seconds) says otherwise; heartbeats come three times per TTL
    // (at most every 2 s).
    let lease_ttl = std::env::var("LEO_LEASE_TTL")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s >= 0.3)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64);
    let mut detected = Machine::detect();
    if let Some(c) = machine.cpus {
        detected.cpus = c.max(1);
    }
    if let Some(g) = machine.gpus {
        // Within the GPUs this process may use (CUDA_VISIBLE_DEVICES), else by index.
        detected.gpus = if detected.gpus.len() >= g as usize {
            detected.gpus.into_iter().take(g as usize).collect()
        } else {
            (0..g).map(|i| i.to_string()).collect()
        };
    }
    EngineOptions {
        machine: detected,
        grace: Duration::from_secs_f64(machine.grace.max(0.0)),
        retry_base: Duration::from_secs_f64(machine.retry_delay.max(0.0)),
        heartbeat: lease_ttl.min(Duration::from_secs(6)) / 3,
        lease_ttl,
        work_root: std::path::absolute(work_root(state_loc))
            .unwrap_or_else(|_| work_root(state_loc)),
    }
}

/// Ctrl-C / SIGTERM flip the watch to `true`; a second one exits at once.
fn cancel_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        let mut signals = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            signals += 1;
            if signals == 1 {
                eprintln!("leo: stopping: asking running stages to stop (again to force)");
                let _ = tx.send(true);
            } else {
                eprintln!("leo: forced stop; `leo resume` will rerun what was running");
                leo_engine::kill_all_attempts();
                std::process::exit(130);
            }
        }
    });
    rx
}

pub async fn run(state_flag: Option<String>, args: RunArgs) -> Result<ExitCode> {
    // Everything is checked before the state database is touched.
    let checked = super::load_checked_on(&args.file, args.executor.map(Into::into))?;
    let state_loc = state_location(state_flag, Some(&checked.workflow));
    let store_loc = args
        .store
        .clone()
        .or_else(|| checked.workflow.storage.artifacts.clone())
        .unwrap_or_else(|| DEFAULT_STORE.to_string());
    let store = ArtifactStore::open(&store_loc)?;
    let state = State::open(&state_loc).await?;
    let opts = engine_options(&args.machine, &state_loc);
    let progress = Arc::new(Progress::new(args.json));
    let cancel = cancel_on_signals();
    let outcome = leo_engine::start_run(
        checked,
        &args.file.display().to_string(),
        &state,
        &store,
        &opts,
        progress.clone(),
        cancel,
    )
    .await?;
    progress.finish();
    report(&state, outcome, args.json).await
}

pub async fn resume(
    state_flag: Option<String>,
    run_id: &str,
    machine: MachineArgs,
    json: bool,
) -> Result<ExitCode> {
    let state_loc = state_location(state_flag, None);
    let state = State::open_existing(&state_loc).await?;
    let opts = engine_options(&machine, &state_loc);
    let progress = Arc::new(Progress::new(json));
    let cancel = cancel_on_signals();
    let outcome =
        leo_engine::resume_run(run_id, &state, &catalog()?, &opts, progress.clone(), cancel)
            .await?;
    progress.finish();
    report(&state, outcome, json).await
}

/// ` --state PATH` when the state is not where the other commands look by default.
fn state_flag_hint(location: &str) -> String {
    if location == super::DEFAULT_STATE
        || std::env::var("LEO_STATE_URL").is_ok_and(|v| v == location)
    {
        String::new()
    } else {
        format!(" --state {location}")
    }
}

async fn report(state: &State, outcome: RunOutcome, json: bool) -> Result<ExitCode> {
    let stages = state.stages(&outcome.run_id).await?;
    if json {
        let v = serde_json::json!({ "run": outcome.run_id, "status": outcome.status, "stages": stages });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let count =
            |f: fn(&leo_state::StageStatus) -> bool| stages.iter().filter(|s| f(&s.status)).count();
        eprintln!(
            "run {} {}: {} ran, {} cached, {} failed, {} not run",
            outcome.run_id,
            outcome.status,
            count(|s| *s == leo_state::StageStatus::Succeeded),
            count(|s| *s == leo_state::StageStatus::Cached),
            count(|s| *s == leo_state::StageStatus::Failed),
            count(|s| !s.is_done() && *s != leo_state::StageStatus::Failed),
        );
        if outcome.status != RunStatus::Succeeded {
            for s in stages
                .iter()
                .filter(|s| s.status == leo_state::StageStatus::Failed)
            {
                let error = s
                    .error
                    .as_deref()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("");
                eprintln!(
                    "  failed: {}: {}",
                    s.name,
                    crate::progress::elide_middle(error, 300)
                );
            }
            eprintln!(
                "  details: leo{1} status {0}    finish it: leo{1} resume {0}",
                outcome.run_id,
                state_flag_hint(state.location())
            );
        }
    }
    Ok(match outcome.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::Cancelled => ExitCode::from(130),
        _ => ExitCode::FAILURE,
    })
}

pub async fn plan(
    state_flag: Option<String>,
    file: &Path,
    store: Option<String>,
    json: bool,
    gpu: &str,
    mfu: f64,
    executor: Option<leo_spec::Executor>,
) -> Result<ExitCode> {
    let hardware = leo_engine::Hardware::new(gpu, mfu).map_err(anyhow::Error::msg)?;
    let checked = super::load_checked_on(file, executor)?;
    let state_loc = state_location(state_flag, Some(&checked.workflow));
    let store_loc = store
        .or_else(|| checked.workflow.storage.artifacts.clone())
        .unwrap_or_else(|| DEFAULT_STORE.to_string());
    let store = ArtifactStore::open(&store_loc)?;
    let state = State::open(&state_loc).await?;
    let entries = leo_engine::plan(&checked, &state, &store).await?;
    let cost = leo_engine::estimate(&checked, &hardware);
    if json {
        let entries = super::cost::with_estimates(serde_json::to_value(&entries)?, &cost);
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    let width = entries
        .iter()
        .map(|e| e.stage.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut runs = 0;
    for e in &entries {
        match &e.status {
            PlanStatus::Cached { from_run, .. } => {
                println!("{:width$}  cached  (from run {from_run})", e.stage)
            }
            PlanStatus::Run {
                reason, changed, ..
            } => {
                runs += 1;
                println!("{:width$}  run     {reason}", e.stage);
                for c in changed {
                    println!("{:width$}            changed {c}", "");
                }
            }
        }
    }
    println!("{} to run, {} cached", runs, entries.len() - runs);
    super::cost::print(&cost);
    print_sbatch_scripts(&checked, &state_loc)?;
    Ok(ExitCode::SUCCESS)
}

/// The sbatch script each Slurm stage would be submitted with, as its first attempt of a run
/// (`RUN` stands for the run id, which does not exist yet).
fn print_sbatch_scripts(checked: &leo_engine::Checked, state_loc: &str) -> Result<()> {
    let slurm: Vec<&String> = checked
        .dag
        .topo_order()
        .iter()
        .filter(|s| checked.workflow.stages[*s].executor == leo_spec::Executor::Slurm)
        .collect();
    if slurm.is_empty() {
        return Ok(());
    }
    let profile = leo_engine::SiteProfile::load()?;
    let work_root = super::work_root(state_loc);
    println!();
    match &profile.path {
        Some(p) => println!("Slurm jobs (site profile {}):", p.display()),
        None => println!("Slurm jobs (no site profile):"),
    }
    for stage in slurm {
        let work = leo_engine::attempt_dir(&work_root, "RUN", stage, 1);
        let plan = leo_engine::job_script(checked, stage, "RUN", 1, &work, &profile)?;
        println!("\n# ── stage {stage} ──");
        print!("{}", plan.script);
    }
    Ok(())
}
