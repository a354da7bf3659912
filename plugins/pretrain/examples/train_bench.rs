//! leo's side of `just bench train` (bench/train.py and bench/train_gpu.py run it): the pretrain
//! stage's training loop (`leo_train::train`: packed token rows, gradient accumulation,
//! ZeRO-1 AdamW on PyTorch's fused kernel with one rank, warmup + cosine) on a new model,
//! timed over the updates after a warmup.
//!
//! Usage: train_bench --tokens DIR --config CONFIG_JSON [--seq-len 256] [--micro-batch 4]
//!   [--accumulation 2] [--steps 20] [--warmup-steps 2] [--threads N] [--seed 0]
//!   [--lr 1e-3] [--min-lr 1e-4] [--lr-warmup 2] [--device cpu|cuda] [--precision f32|bf16]
//!   [--recompute]
//!
//! DIR holds `*.bin/*.idx` token shards (packed back to back into rows of seq-len tokens, read
//! in stored order: no shuffle); CONFIG_JSON is an HF Llama `config.json`, initialised with
//! `Llama::init` (transformers' initialisation) from the seed. `--steps` counts the timed
//! updates; the run makes warmup + steps updates in all.
//!
//! Timing: `train` runs twice in this process, each time on a new model — first for the warmup
//! updates alone, then for warmup + steps — and the timed updates take the difference of the
//! two wall times, so model set-up, the optimizer's flat buffers and the first, slow updates
//! cancel out. The trainer's own events (JSON lines with an "event" key, among them
//! `tokens_per_s` per update) go to stdout as in a stage; the last line is this example's
//! result: {"bench": "leo", "tokens_per_s", "seconds", "tokens", "final_loss", "losses",
//! "peak_rss_kb", ...}.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use leo_llama::tch::Kind;
use leo_llama::{Config, Llama};
use leo_plugin::Emitter;
use leo_train::collective::Single;
use leo_train::data::PackedTokens;
use leo_train::params::{DeviceChoice, Precision};
use leo_train::{stage, Run, TrainParams};

struct Args {
    tokens: PathBuf,
    config: PathBuf,
    seq_len: usize,
    micro_batch: usize,
    accumulation: usize,
    steps: u64,
    warmup_steps: u64,
    threads: Option<i32>,
    seed: u64,
    lr: f64,
    min_lr: f64,
    lr_warmup: u64,
    device: DeviceChoice,
    precision: Precision,
    recompute: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        tokens: PathBuf::new(),
        config: PathBuf::new(),
        seq_len: 256,
        micro_batch: 4,
        accumulation: 2,
        steps: 20,
        warmup_steps: 2,
        threads: None,
        seed: 0,
        lr: 1e-3,
        min_lr: 1e-4,
        lr_warmup: 2,
        device: DeviceChoice::Cpu,
        precision: Precision::F32,
        recompute: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--recompute" {
            a.recompute = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let v = value.as_str();
        let bad = || format!("{flag} {value}");
        match flag.as_str() {
            "--tokens" => a.tokens = v.into(),
            "--config" => a.config = v.into(),
            "--seq-len" => a.seq_len = v.parse().with_context(bad)?,
            "--micro-batch" => a.micro_batch = v.parse().with_context(bad)?,
            "--accumulation" => a.accumulation = v.parse().with_context(bad)?,
            "--steps" => a.steps = v.parse().with_context(bad)?,
            "--warmup-steps" => a.warmup_steps = v.parse().with_context(bad)?,
            "--threads" => a.threads = Some(v.parse().with_context(bad)?),
            "--seed" => a.seed = v.parse().with_context(bad)?,
            "--lr" => a.lr = v.parse().with_context(bad)?,
            "--min-lr" => a.min_lr = v.parse().with_context(bad)?,
            "--lr-warmup" => a.lr_warmup = v.parse().with_context(bad)?,
            "--device" => {
                a.device = match v {
                    "cpu" => DeviceChoice::Cpu,
                    "cuda" => DeviceChoice::Cuda,
                    _ => bail!("--device: cpu or cuda, got {v}"),
                }
            }
            "--precision" => {
                a.precision = match v {
                    "f32" => Precision::F32,
                    "bf16" => Precision::Bf16,
                    _ => bail!("--precision: f32 or bf16, got {v}"),
                }
            }
            _ => bail!("unknown option {flag}"),
        }
    }
    if a.tokens.as_os_str().is_empty() || a.config.as_os_str().is_empty() {
        bail!("usage: train_bench --tokens DIR --config CONFIG_JSON [options]");
    }
    if a.steps == 0 {
        bail!("--steps must be at least 1");
    }
    Ok(a)
}

fn main() -> Result<()> {
    // As leo-torch runs the training stages.
    leo_train::keep_freed_memory();
    let a = parse_args()?;
    let config_text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let rows = PackedTokens::open_dir(&a.tokens, a.seq_len, false)?;
    let device = stage::device(a.device, 1, 0)?;
    // No checkpoint is written (no `checkpoint_every`, no SIGTERM), but the run needs a folder.
    let checkpoints = tempfile::tempdir().context("creating a checkpoint folder")?;
    let events = Emitter::new();

    // One run of `updates` updates of a new model; its wall time and outcome.
    let run = |updates: u64| -> Result<(f64, leo_train::Outcome)> {
        let params = TrainParams {
            steps: updates,
            micro_batch: a.micro_batch,
            global_batch: Some(a.micro_batch * a.accumulation),
            lr: a.lr,
            min_lr: a.min_lr,
            warmup_steps: a.lr_warmup.min(updates),
            precision: a.precision,
            device: a.device,
            recompute: a.recompute,
            seed: a.seed,
            shuffle: false,
            threads: a.threads,
            ..TrainParams::default()
        };
        if let Err((field, message)) = params.check() {
            bail!("{field}: {message}");
        }
        if let Some(t) = a.threads {
            // Before the model is built, so initialisation uses the same threads.
            leo_llama::tch::set_num_threads(t);
        }
        let config = Config::from_json(&config_text)
            .with_context(|| format!("in {}", a.config.display()))?;
        let model = Llama::init(config, device, Kind::Float, a.seed as i64)?;
        let start = Instant::now();
        let outcome = leo_train::train(
            model,
            &mut Single,
            Run {
                params: &params,
                record: serde_json::Value::Null,
                train: &rows,
                validation: None,
                checkpoint_dir: checkpoints.path().to_path_buf(),
                resume: None,
                events: &events,
                model_files: &|_: &Path| Ok(()),
            },
        )?;
        Ok((start.elapsed().as_secs_f64(), outcome))
    };

    let (t_warm, warm) = if a.warmup_steps > 0 {
        let (t, o) = run(a.warmup_steps)?;
        (t, Some(o))
    } else {
        (0.0, None)
    };
    drop(warm);
    let (t_all, outcome) = run(a.warmup_steps + a.steps)?;

    let seconds = t_all - t_warm;
    let tokens = a.steps * (a.micro_batch * a.accumulation * a.seq_len) as u64;
    println!(
        "{}",
        serde_json::json!({
            "bench": "leo",
            "tokens_per_s": tokens as f64 / seconds,
            "seconds": seconds,
            "tokens": tokens,
            "warmup_run_seconds": t_warm,
            "full_run_seconds": t_all,
            "final_loss": outcome.losses.last().map(|(_, l)| *l),
            "losses": outcome.losses.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
            "parameters": outcome.model.named_tensors().iter().map(|(_, t)| t.numel()).sum::<usize>(),
            "device": format!("{device:?}"),
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
