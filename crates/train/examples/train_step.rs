//! leo's side of `just bench train-step` (bench/train_step.py runs it): times full training
//! steps — forward, next-token loss (output layer in chunks, `Llama::train_loss`), backward, fused AdamW, gradients reset — of the HF
//! checkpoint in MODEL_DIR on the batch in BATCH_JSON (a list of rows of token ids), on the CPU.
//!
//! Usage: train_step MODEL_DIR BATCH_JSON STEPS WARMUP THREADS
//! Prints one JSON object: {"step_seconds": [...], "phases": [[forward, backward, optimizer], ...],
//! "losses": [...], "peak_rss_kb": N} (warmup steps included).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use leo_llama::tch::{self, Device, Kind, Tensor};
use leo_llama::Llama;
use leo_train::{AdamW, AdamWConfig};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, batch_json, steps, warmup, threads] = args.as_slice() else {
        anyhow::bail!("usage: train_step MODEL_DIR BATCH_JSON STEPS WARMUP THREADS");
    };
    let steps: usize = steps.parse().context("STEPS")?;
    let warmup: usize = warmup.parse().context("WARMUP")?;
    tch::set_num_threads(threads.parse().context("THREADS")?);

    let rows: Vec<Vec<i64>> = serde_json::from_str(
        &std::fs::read_to_string(batch_json).with_context(|| format!("reading {batch_json}"))?,
    )
    .with_context(|| format!("parsing {batch_json}"))?;
    let ids = Tensor::from_slice(&rows.concat()).view([rows.len() as i64, -1]);

    let mut model = Llama::load(&PathBuf::from(model_dir), Device::Cpu, Kind::Float)?;
    model.make_trainable();
    let config = AdamWConfig {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.05,
    };
    let mut opt = AdamW::new(model.named_tensors(), config)?;
    let (mut seconds, mut phases, mut losses) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..warmup + steps {
        let start = Instant::now();
        let loss = model.train_loss(&ids, &ids, None, -100)?;
        let value = loss.loss.double_value(&[]);
        let forward = start.elapsed().as_secs_f64();
        loss.backward(1.0);
        let backward = start.elapsed().as_secs_f64();
        opt.step()?;
        opt.zero_grad()?;
        let total = start.elapsed().as_secs_f64();
        losses.push(value);
        seconds.push(total);
        phases.push([forward, backward - forward, total - backward]);
    }
    println!(
        "{}",
        serde_json::json!({
            "step_seconds": seconds,
            "phases": phases,
            "losses": losses,
            "peak_rss_kb": peak_rss_kb(),
        })
    );
    Ok(())
}

/// The process's peak resident memory (VmHWM of /proc/self/status), in kB; 0 where unknown.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
