//! The eval stage's work without the engine, for `just bench eval` and the conformance test:
//!
//!     eval_run --model DIR --data NAME=PATH ... --tasks a,b [--limit N] [--dtype f32|f64]
//!              [--add-bos] [--threads N] --out DIR
//!
//! Writes `results.json`, `samples_TASK.jsonl` and `timing.json` (seconds, items, requests).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use leo_llama::{Llama, Tokenizer};
use leo_plugin_eval::evaluate::{self, Options, Selected};
use leo_plugin_eval::results::{self, RunFacts};
use leo_plugin_eval::task;
use tch::{Device, Kind};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut model, mut out, mut tasks, mut limit) = (None, None, None, None);
    let mut data = Vec::new();
    let mut kind = Kind::Float;
    let mut add_bos = false;
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--tasks" => tasks = Some(value()?),
            "--limit" => limit = Some(value()?.parse::<usize>()?),
            "--data" => {
                let v = value()?;
                let (k, p) = v.split_once('=').context("--data NAME=PATH")?;
                data.push((k.to_string(), PathBuf::from(p)));
            }
            "--dtype" => {
                kind = match value()?.as_str() {
                    "f32" | "float32" => Kind::Float,
                    "f64" | "float64" => Kind::Double,
                    other => bail!("--dtype {other}: f32 or f64"),
                }
            }
            "--add-bos" => add_bos = true,
            "--threads" => tch::set_num_threads(value()?.parse::<i32>()?),
            other => bail!("unknown argument {other}"),
        }
    }
    let (Some(model_dir), Some(out), Some(tasks)) = (model, out, tasks) else {
        bail!("usage: eval_run --model DIR --data NAME=PATH ... --tasks a,b [--limit N] [--dtype f32|f64] --out DIR");
    };
    let catalog = task::catalog(None)?;
    let mut selected = Vec::new();
    for name in tasks.split(',') {
        let spec = catalog
            .get(name)
            .with_context(|| format!("no task {name}"))?
            .clone();
        let dataset = data
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, p)| p.clone())
            .with_context(|| format!("no --data {name}=PATH"))?;
        selected.push(Selected {
            name: name.to_string(),
            spec,
            dataset,
            limit,
        });
    }
    let start = Instant::now();
    let model = Llama::load(&model_dir, Device::Cpu, kind)?;
    let tokenizer = Tokenizer::from_file(&model_dir.join("tokenizer.json"))?;
    let max_length = model.config.max_position_embeddings as usize;
    let built = evaluate::build(&selected, 1234)?;
    let opts = Options {
        add_bos_token: add_bos,
        max_length,
        fewshot_seed: 1234,
    };
    let eval = evaluate::score(built, &model, &tokenizer, &opts, |_, _| {})?;
    let seconds = start.elapsed().as_secs_f64();
    let items: usize = eval.tasks.iter().map(|t| t.items.len()).sum();
    let facts = RunFacts {
        model: model_dir.display().to_string(),
        dtype: format!("{kind:?}"),
        device: "cpu".into(),
        parameters: model
            .named_tensors()
            .iter()
            .map(|(_, t)| t.numel() as i64)
            .sum(),
        add_bos_token: add_bos,
        max_length,
        fewshot_seed: 1234,
        limit,
        seconds,
    };
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_vec_pretty(&results::results_json(&eval, &facts))?,
    )?;
    results::write_samples(&eval, &out)?;
    std::fs::write(
        out.join("timing.json"),
        serde_json::to_vec(
            &serde_json::json!({"seconds": seconds, "items": items, "requests": eval.requests}),
        )?,
    )?;
    println!(
        "{items} items, {} requests in {seconds:.2} s ({:.1} items/s)",
        eval.requests,
        items as f64 / seconds
    );
    Ok(())
}
