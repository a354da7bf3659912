//! The run report: one self-contained HTML page about a run — header and provenance, stages,
//! training loss curves, German vs English benchmark bars, the eval table and the lineage
//! graph — with its data beside it as JSON.
//!
//! Both entry points render a [`leo_plugin::RunContext`]: `leo report RUN` builds it from the
//! state for all stages, the `report` stage ([`Report`]) gets it from the engine for the
//! stages upstream of it. Torch-free and database-free.

mod charts;
pub mod data;
mod html;
pub mod lineage;
mod stage;

use std::path::Path;

use anyhow::{Context, Result};

pub use data::ReportData;
pub use html::{esc, render_html};
pub use stage::Report;

/// Writes `html` (the page) and, beside it, the same name with `.json` (the data).
pub fn write_report(data: &ReportData, html: &Path) -> Result<()> {
    if let Some(dir) = html.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let page = render_html(data)?;
    std::fs::write(html, page).with_context(|| format!("writing {}", html.display()))?;
    let json = html.with_extension("json");
    let text = serde_json::to_vec_pretty(data).context("serialising the report data")?;
    std::fs::write(&json, text).with_context(|| format!("writing {}", json.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests;
