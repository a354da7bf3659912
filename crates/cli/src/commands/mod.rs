//! One function per subcommand. Exit codes: 0 ok, 1 a run or command failed, 2 bad input
//! (invalid workflow, unknown run), 130 cancelled.

mod cost;
pub mod export;
mod inspect;
mod lineage;
mod lineage_export;
mod metrics;
mod report;
mod run;
pub mod serve;
mod upkeep;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use leo_engine::Catalog;
use leo_spec::SpecError;

use crate::cli::{Cli, Command, LineageFormat};

pub const DEFAULT_STATE: &str = ".leo/state.db";
pub const DEFAULT_STORE: &str = ".leo/store";

pub fn dispatch(cli: Cli) -> ExitCode {
    if let Command::Worker { plugin, invocation } = &cli.command {
        return crate::worker::run(plugin, invocation);
    }
    if let Command::WorkerRank { template, command } = &cli.command {
        return crate::worker_rank::run(template, command);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let state = cli.state.clone();
        let result = match cli.command {
            Command::Run(args) => run::run(state, args).await,
            Command::Resume { run, machine, json } => run::resume(state, &run, machine, json).await,
            Command::Status { run, json } => inspect::status(state, run.as_deref(), json).await,
            Command::List { limit, json } => inspect::list(state, limit, json).await,
            Command::Plan {
                file,
                store,
                json,
                mfu,
                gpu,
                executor,
            } => {
                run::plan(
                    state,
                    &file,
                    store,
                    json,
                    &gpu,
                    mfu,
                    executor.map(Into::into),
                )
                .await
            }
            Command::Validate { file } => run::validate(&file),
            Command::Graph { file, format } => run::graph(&file, format),
            Command::Logs {
                run,
                stage,
                attempt,
                raw,
            } => inspect::logs(state, &run, &stage, attempt, raw).await,
            Command::Verify { artifact, store } => upkeep::verify(state, &artifact, store).await,
            Command::Gc {
                delete,
                min_age,
                store,
            } => upkeep::gc(state, delete, min_age, store).await,
            Command::Lineage {
                artifact,
                format,
                json,
                from_store,
            } => {
                let format = if json { LineageFormat::Json } else { format };
                lineage::lineage(state, &artifact, format, from_store).await
            }
            Command::Metrics {
                run,
                stage,
                format,
                out,
            } => metrics::metrics(state, &run, stage.as_deref(), format, out.as_deref()).await,
            Command::Report { run, out } => report::report(state, &run, out.as_deref()).await,
            Command::Serve(args) => serve::serve(state, args).await,
            Command::Export(command) => export::export(command),
            Command::Worker { .. } | Command::WorkerRank { .. } => unreachable!("handled above"),
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                if let Some(spec) = e.downcast_ref::<SpecError>() {
                    eprintln!("error: {spec}");
                    return ExitCode::from(2);
                }
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

pub fn catalog() -> anyhow::Result<Catalog> {
    let exe =
        std::env::current_exe().map_err(|e| anyhow::anyhow!("locating the leo executable: {e}"))?;
    Ok(Catalog::new(crate::worker::builtins(), exe))
}

/// Loads and checks a workflow file; errors are [`SpecError`]s naming file:line:col and field.
pub fn load_checked(file: &Path) -> anyhow::Result<leo_engine::Checked> {
    load_checked_on(file, None)
}

/// [`load_checked`] with every stage's executor set to `executor` when given (`--executor`).
pub fn load_checked_on(
    file: &Path,
    executor: Option<leo_spec::Executor>,
) -> anyhow::Result<leo_engine::Checked> {
    let mut loaded = leo_spec::load_file(file)?;
    if let Some(e) = executor {
        for stage in loaded.workflow.stages.values_mut() {
            stage.executor = e;
        }
    }
    Ok(leo_engine::check(&loaded, &catalog()?)?)
}

/// The state location: `--state` / `LEO_STATE_URL`, then the workflow's, then the default.
/// A run by id, or the newest for `latest`, with the error a user can act on.
pub async fn find_run(state: &leo_state::State, run: &str) -> anyhow::Result<leo_state::RunRecord> {
    use anyhow::Context;
    if run == "latest" {
        state.latest_run(None).await?.context("no runs yet")
    } else {
        state
            .get_run(run)
            .await?
            .with_context(|| format!("no run `{run}` (see `leo list`)"))
    }
}

pub fn state_location(flag: Option<String>, workflow: Option<&leo_spec::Workflow>) -> String {
    flag.or_else(|| workflow.and_then(|w| w.storage.state.clone()))
        .unwrap_or_else(|| DEFAULT_STATE.to_string())
}

/// Attempt working folders live beside the state database (under `.leo/` when the state is on a
/// server).
pub fn work_root(state_location: &str) -> PathBuf {
    if state_location.starts_with("postgres") {
        return Path::new(DEFAULT_STATE)
            .parent()
            .map_or_else(|| PathBuf::from("work"), |p| p.join("work"));
    }
    let path = state_location
        .strip_prefix("sqlite://")
        .unwrap_or(state_location);
    Path::new(path)
        .parent()
        .map_or_else(|| PathBuf::from("work"), |p| p.join("work"))
}

/// Formats a millisecond timestamp as local time.
pub fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

pub fn format_seconds(s: f64) -> String {
    leo_engine::format_duration(std::time::Duration::try_from_secs_f64(s).unwrap_or_default())
}

pub fn short_digest(digest: &str) -> String {
    inspect::short(digest)
}
