//! `leo-torch`: the stages that need libtorch, run by the engine like built-ins.
//!
//! - `leo-torch describe NAME` reads the params (JSON) on stdin and prints a `DescribeReply`
//!   (exit 0) or a `ParamError` (exit 1), as external plugins do;
//! - `leo-torch worker NAME INVOCATION.json` runs one attempt (one rank) and prints events;
//! - `leo-torch serve CHECKPOINT [FLAGS]` serves a chat model over OpenAI's API (leo-serve).
//!
//! The engine finds this executable beside `leo` (or on PATH) for the names it serves.

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use leo_plugin::{DescribeReply, Emitter, Invocation, Plugin};

fn plugins() -> Vec<Arc<dyn Plugin>> {
    vec![
        Arc::new(leo_plugin_pretrain::Pretrain),
        Arc::new(leo_plugin_sft::Sft),
        Arc::new(leo_plugin_eval::Eval),
        Arc::new(leo_plugin_mtbench::Mtbench),
    ]
}

fn main() -> ExitCode {
    leo_train::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["describe", name] => describe(name),
        ["serve", ..] => leo_serve::main(&args[1..]),
        ["worker", name, invocation] => {
            leo_plugin::tie_to_engine();
            match work(name, invocation) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!(
                "usage: leo-torch describe NAME < params.json | leo-torch worker NAME INVOCATION.json | leo-torch serve CHECKPOINT [--help]\nstages: {}",
                names().join(", ")
            );
            ExitCode::from(2)
        }
    }
}

fn names() -> Vec<&'static str> {
    plugins().iter().map(|p| p.name()).collect()
}

fn find(name: &str) -> Result<Arc<dyn Plugin>> {
    match plugins().into_iter().find(|p| p.name() == name) {
        Some(p) => Ok(p),
        None => bail!(
            "leo-torch has no stage `{name}` (it has: {})",
            names().join(", ")
        ),
    }
}

fn describe(name: &str) -> ExitCode {
    let result = (|| -> Result<Result<DescribeReply, leo_plugin::ParamError>> {
        let plugin = find(name)?;
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading params on stdin")?;
        let params: serde_json::Value = if text.trim().is_empty() {
            serde_json::json!({})
        } else {
            serde_json::from_str(&text).context("params on stdin are not JSON")?
        };
        Ok(plugin.describe(&params).map(|outputs| DescribeReply {
            version: Some(plugin.version()),
            outputs,
            wants_run_context: plugin.wants_run_context(),
            estimate: plugin.estimate(&params),
        }))
    })();
    match result {
        Ok(Ok(reply)) => {
            println!("{}", serde_json::to_string(&reply).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(Err(param)) => {
            println!("{}", serde_json::to_string(&param).unwrap_or_default());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn work(name: &str, invocation: &str) -> Result<()> {
    let plugin = find(name)?;
    let text =
        std::fs::read(invocation).with_context(|| format!("reading invocation {invocation}"))?;
    let inv: Invocation = serde_json::from_slice(&text)
        .with_context(|| format!("parsing invocation {invocation}"))?;
    plugin.run(&inv, &Emitter::new())
}
