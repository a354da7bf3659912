//! The `report` stage: renders the run report of everything upstream of it from the run
//! context the engine hands it (plugins never read the state). Output `report`: a folder with
//! `report.html` and `report.json`.
//!
//! ```toml
//! [stages.report]
//! plugin = "report"
//! inputs = { base = "eval_base.results", chat = "eval_chat.results" }
//! params = { title = "LeoLM 7B" }   # optional
//! ```

use anyhow::{Context, Result};
use leo_plugin::{param_str, Emitter, Invocation, ParamError, Plugin, RunContext};
use serde_json::Value;

use crate::ReportData;

pub struct Report;

const KNOWN_PARAMS: &[&str] = &["title"];

impl Plugin for Report {
    fn name(&self) -> &'static str {
        "report"
    }

    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    fn describe(&self, params: &Value) -> Result<Vec<String>, ParamError> {
        let obj = params
            .as_object()
            .ok_or_else(|| ParamError::new("", "params must be a table"))?;
        leo_plugin::reject_unknown_params(obj, "report", KNOWN_PARAMS)?;
        param_str(params, "title")?;
        Ok(vec!["report".to_string()])
    }

    fn wants_run_context(&self) -> bool {
        true
    }

    fn run(&self, inv: &Invocation, events: &Emitter) -> Result<()> {
        let path = inv.run_context.as_ref().context(
            "the engine gave this stage no run context (the report plugin needs a leo that \
             writes run_context.json)",
        )?;
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let context: RunContext = serde_json::from_slice(&text)
            .with_context(|| format!("parsing the run context {}", path.display()))?;
        let title = inv
            .params
            .get("title")
            .and_then(Value::as_str)
            .map(str::to_string);
        let data = ReportData::from_context(context, title);
        let dir = inv.output_dir.join("report");
        crate::write_report(&data, &dir.join("report.html"))?;
        events.output("report", &dir)?;
        Ok(())
    }
}
