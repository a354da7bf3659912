//! `leo worker PLUGIN INVOCATION`: one attempt of a built-in plugin, in its own process.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use leo_plugin::{Emitter, Invocation, Plugin};

/// The plugins compiled into this binary.
pub fn builtins() -> Vec<Arc<dyn Plugin>> {
    vec![
        Arc::new(leo_plugin_shell::Shell),
        Arc::new(leo_report::Report),
        Arc::new(leo_plugin_corpus::Corpus),
        Arc::new(leo_plugin_tokenize::Tokenize),
        Arc::new(leo_plugin_tokenize::train::TrainTokenizer),
    ]
}

pub fn run(plugin: &str, invocation: &Path) -> ExitCode {
    leo_plugin::tie_to_engine();
    match run_inner(plugin, invocation) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<leo_plugin::ExitWith>() {
            // The command already said why on stderr; pass its code on.
            Some(leo_plugin::ExitWith(code)) => ExitCode::from(*code),
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_inner(name: &str, invocation: &Path) -> Result<()> {
    let plugins = builtins();
    let plugin = plugins
        .iter()
        .find(|p| p.name() == name)
        .with_context(|| format!("no built-in plugin `{name}`"))?;
    let text =
        std::fs::read(invocation).with_context(|| format!("reading {}", invocation.display()))?;
    let inv: Invocation = serde_json::from_slice(&text)
        .with_context(|| format!("parsing invocation {}", invocation.display()))?;
    plugin.run(&inv, &Emitter::new())
}
