//! `leo report RUN`: the run report (docs/report.md) from the state, through the same run
//! context and renderer as the `report` stage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use leo_report::ReportData;
use leo_state::{RunRecord, State};

use super::{state_location, DEFAULT_STATE};

pub async fn report(state_flag: Option<String>, run: &str, out: Option<&Path>) -> Result<ExitCode> {
    let location = state_location(state_flag, None);
    let state = State::open_existing(&location).await?;
    let run = resolve_run(&state, run).await?;
    let context = leo_engine::run_context(&state, &run.id, None)
        .await
        .with_context(|| format!("run {}: reading what the state knows", run.id))?;
    let data = ReportData::from_context(context, None);
    let path = match out {
        Some(p) => p.to_path_buf(),
        None => reports_dir(&location).join(format!("{}.html", run.id)),
    };
    leo_report::write_report(&data, &path)?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// A run by id, `latest`, or a unique prefix of an id.
async fn resolve_run(state: &State, text: &str) -> Result<RunRecord> {
    if text == "latest" {
        return super::find_run(state, text).await;
    }
    if let Some(run) = state.get_run(text).await? {
        return Ok(run);
    }
    let matches: Vec<RunRecord> = state
        .list_runs(i64::MAX)
        .await?
        .into_iter()
        .filter(|r| r.id.starts_with(text))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no run `{text}` (see `leo list`)"),
        many => bail!(
            "`{text}` is ambiguous: {}",
            many.iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Reports go beside the state database (`.leo/reports` when the state is on a server).
fn reports_dir(state_location: &str) -> PathBuf {
    let file = if state_location.starts_with("postgres") {
        DEFAULT_STATE
    } else {
        state_location
            .strip_prefix("sqlite://")
            .unwrap_or(state_location)
    };
    Path::new(file)
        .parent()
        .map_or_else(|| PathBuf::from("reports"), |p| p.join("reports"))
}
