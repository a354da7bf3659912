//! The training loop: batches in a fixed order, gradient accumulation, ZeRO-1 updates, metrics,
//! validation, checkpoints (every N updates and on SIGTERM), exact resume.
//!
//! Rows of update `s` are the global sample indices `[c, c + B)` (c = samples consumed so far,
//! B = the global batch); rank `r` reads the `r`-th contiguous slice of them in `accumulation`
//! micro-batches. The loss is the mean over every scored token of the global batch: each
//! micro-batch's mean is weighted by its share of the batch's tokens before its backward pass,
//! so any split of a batch over ranks and micro-batches gives the same gradient.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use leo_llama::{next_token_loss, Llama};
use leo_plugin::Emitter;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, TrainerState};
use crate::collective::{all_reduce_scalars, Collective};
use crate::data::{Order, Sample, Samples, IGNORE};
use crate::optim::AdamWConfig;
use crate::params::{Precision, TrainParams};
use crate::precision;
use crate::zero::ShardedAdamW;

/// Everything a training run needs besides the model and the ranks.
pub struct Run<'a> {
    pub params: &'a TrainParams,
    /// The stage's params, recorded in every checkpoint.
    pub record: serde_json::Value,
    pub train: &'a dyn Samples,
    pub validation: Option<&'a dyn Samples>,
    pub checkpoint_dir: PathBuf,
    /// A complete checkpoint to continue from (its model must already be loaded).
    pub resume: Option<(PathBuf, TrainerState)>,
    pub events: &'a Emitter,
    /// Adds files a checkpoint's model folder needs besides the weights (the tokenizer).
    pub model_files: &'a dyn Fn(&Path) -> Result<()>,
}

/// How a run ended.
pub struct Outcome {
    pub model: Llama,
    pub last_val_loss: Option<f64>,
    /// (step, loss) of every update this attempt made.
    pub losses: Vec<(u64, f64)>,
}

/// Set by SIGTERM: finish the update, save a checkpoint, stop.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_sigterm() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// The error a run stopped by SIGTERM ends with, after its checkpoint.
#[derive(Debug)]
pub struct Stopped {
    pub step: u64,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped by SIGTERM; checkpoint saved at step {}",
            self.step
        )
    }
}

impl std::error::Error for Stopped {}

pub fn train(mut model: Llama, comm: &mut dyn Collective, run: Run<'_>) -> Result<Outcome> {
    let p = run.params;
    let (rank, world) = (comm.rank(), comm.world_size());
    if let Some(t) = p.threads {
        tch::set_num_threads(t);
    }
    let device = model.device();
    let precision = precision::resolve(p.precision, device)?;
    let accumulation = p.accumulation(world)?;
    let global_batch = (p.micro_batch * accumulation * world) as u64;
    let seq_len = run.train.seq_len();
    if seq_len as i64 > model.config.max_position_embeddings {
        bail!(
            "seq_len {seq_len} is longer than the model's context ({}); raise max_position_embeddings (with rope scaling)",
            model.config.max_position_embeddings
        );
    }
    let mut opt = ShardedAdamW::new(
        &mut model,
        AdamWConfig {
            lr: p.lr,
            beta1: p.beta1,
            beta2: p.beta2,
            eps: p.eps,
            weight_decay: p.weight_decay,
        },
        rank,
        world,
    )?;
    opt.broadcast_parameters(comm)?;
    let mut scaler = precision::LossScaler::new(precision);
    let (mut step, mut consumed) = (0u64, 0u64);
    if let Some((dir, state)) = &run.resume {
        if state.layout != opt.slots() {
            bail!(
                "checkpoint {} holds a model of another shape than this stage's",
                dir.display()
            );
        }
        opt.load_shards(&dir.join("optimizer"), state.world_size, state.step)?;
        step = state.step;
        consumed = state.samples_consumed;
        scaler.scale = state.loss_scale;
        log(
            rank,
            &format!(
                "resuming from {} at step {step} ({consumed} samples consumed)",
                dir.display()
            ),
        );
    }
    let rows = match p.train_rows {
        Some(n) => n.min(run.train.len()),
        None => run.train.len(),
    };
    let mut order = Order::new(rows, p.seed, p.shuffle)?;
    let schedule = p.schedule();
    let flops_per_token = flops_per_token(&model, seq_len);
    let peak = p
        .peak_tflops
        .or_else(|| precision::detect_peak_tflops(device));
    install_sigterm();
    if rank == 0 {
        run.events.progress(step, Some(p.steps), "steps")?;
    }
    log(rank, &format!(
        "training {} parameters on {world} rank(s), {device:?}, {precision:?}: global batch {global_batch} × {seq_len} tokens ({} micro-batches of {} per rank), ZeRO-1 shard {} per rank",
        opt.numel(), accumulation, p.micro_batch, opt.shard_len()
    ));
    let mut losses = Vec::new();
    let mut last_val = None;
    let mut last_saved = step;
    while step < p.steps {
        let started = Instant::now();
        let base = consumed + (rank * p.micro_batch * accumulation) as u64;
        let mut batches = Vec::with_capacity(accumulation);
        for a in 0..accumulation {
            let rows = (0..p.micro_batch)
                .map(|m| {
                    run.train
                        .get(order.row(base + (a * p.micro_batch + m) as u64))
                })
                .collect::<Result<Vec<_>>>()?;
            batches.push(rows);
        }
        let local_tokens: f64 = batches.iter().flatten().map(scored_tokens).sum::<u64>() as f64;
        let stop_here = if STOP.load(Ordering::SeqCst) {
            1.0
        } else {
            0.0
        };
        let agreed = all_reduce_scalars(comm, &[local_tokens, stop_here])?;
        if agreed[1] > 0.0 {
            if step > last_saved {
                save(&run, &model, &opt, comm, step, consumed, scaler.scale)?;
            }
            return Err(Stopped { step }.into());
        }
        let global_tokens = agreed[0];
        if global_tokens == 0.0 {
            bail!("update {step} has no token to score (every label is ignored)");
        }
        let mut loss_sum = 0.0;
        for rows in &batches {
            let (ids, labels, docs) = stack(rows, device);
            let tokens = scored_tokens_t(&labels);
            if tokens == 0 {
                continue;
            }
            let loss = precision::autocast(precision, || {
                if p.recompute {
                    model.train_loss_recomputed(&ids, &labels, docs.as_ref(), IGNORE)
                } else {
                    model.train_loss(&ids, &labels, docs.as_ref(), IGNORE)
                }
            })?;
            loss_sum += loss.loss.double_value(&[]) * tokens as f64;
            let scale = tokens as f64 / global_tokens * scaler.scale;
            if p.recompute {
                // Recomputed layers run inside backward: under the forward pass's autocast, as
                // torch.utils.checkpoint restores it. Outside it they ran in f32 — different
                // numbers and, measured on an H200 at 1.2B, 6× slower than without recompute.
                precision::autocast(precision, || {
                    loss.backward(scale);
                    Ok(())
                })?;
            } else {
                loss.backward(scale);
            }
        }
        let lr = schedule.lr(step);
        let report = opt.step(
            comm,
            lr,
            1.0 / scaler.scale,
            p.max_grad_norm,
            precision == Precision::Fp16,
        )?;
        scaler.update(report.skipped);
        let loss = all_reduce_scalars(comm, &[loss_sum])?[0] / global_tokens;
        step += 1;
        consumed += global_batch;
        losses.push((step, loss));
        if device.is_cuda() {
            tch::Cuda::synchronize(device_index(device));
        }
        let seconds = started.elapsed().as_secs_f64();
        let tokens_per_s = (global_batch as f64 * seq_len as f64) / seconds;
        if rank == 0 {
            let e = run.events;
            e.metric(Some(step), "loss", loss)?;
            e.metric(Some(step), "lr", lr)?;
            e.metric(Some(step), "grad_norm", report.grad_norm)?;
            e.metric(Some(step), "tokens_per_s", tokens_per_s)?;
            if let Some(peak) = peak {
                let mfu = tokens_per_s * flops_per_token / (peak * 1e12 * world as f64);
                e.metric(Some(step), "mfu", mfu)?;
            }
            if report.skipped {
                e.metric(Some(step), "skipped_updates", 1.0)?;
            }
            e.progress(step, Some(p.steps), "steps")?;
            eprintln!(
                "step {step}/{}  loss {loss:.4}  lr {lr:.3e}  grad_norm {:.3}  {tokens_per_s:.0} tokens/s",
                p.steps, report.grad_norm
            );
        }
        let last = step == p.steps;
        if let Some(val) = run.validation {
            if last || (p.eval_every > 0 && step % p.eval_every == 0) {
                let v = validate(&model, val, p, comm, device, precision)?;
                if rank == 0 {
                    run.events.metric(Some(step), "val_loss", v)?;
                    run.events.metric(Some(step), "val_ppl", v.exp())?;
                    eprintln!("step {step}  val_loss {v:.4}  val_ppl {:.2}", v.exp());
                }
                last_val = Some(v);
            }
        }
        if p.checkpoint_every > 0 && step % p.checkpoint_every == 0 && !last {
            save(&run, &model, &opt, comm, step, consumed, scaler.scale)?;
            last_saved = step;
        }
    }
    Ok(Outcome {
        model,
        last_val_loss: last_val,
        losses,
    })
}

/// Writes checkpoint `step-N`: every rank its optimizer chunk, rank 0 the model and the trainer
/// state; once all ranks are done, rank 0 commits it and reports it.
fn save(
    run: &Run<'_>,
    model: &Llama,
    opt: &ShardedAdamW,
    comm: &mut dyn Collective,
    step: u64,
    consumed: u64,
    loss_scale: f64,
) -> Result<()> {
    let dir = checkpoint::step_dir(&run.checkpoint_dir, step);
    opt.save_shard(&dir.join("optimizer"))?;
    if comm.rank() == 0 {
        let model_dir = dir.join("model");
        model
            .save(&model_dir, 5 << 30)
            .with_context(|| format!("saving the model into {}", model_dir.display()))?;
        (run.model_files)(&model_dir)?;
        TrainerState {
            format: TrainerState::FORMAT,
            step,
            samples_consumed: consumed,
            world_size: comm.world_size(),
            loss_scale,
            layout: opt.slots().to_vec(),
            params: run.record.clone(),
        }
        .write(&dir)?;
    }
    // Every rank's files are on disk before the marker.
    all_reduce_scalars(comm, &[1.0])?;
    if comm.rank() == 0 {
        checkpoint::commit(&run.checkpoint_dir, &dir)?;
        run.events.checkpoint(step, &dir)?;
        eprintln!("checkpoint step {step}: {}", dir.display());
    }
    Ok(())
}

/// Mean loss over the first `eval_batches` micro-batches of the validation rows (all ranks
/// together; rank r takes batches r, r + W, …).
fn validate(
    model: &Llama,
    val: &dyn Samples,
    p: &TrainParams,
    comm: &mut dyn Collective,
    device: Device,
    precision: Precision,
) -> Result<f64> {
    let _guard = tch::no_grad_guard();
    let (rank, world) = (comm.rank(), comm.world_size());
    let rows = val.len().min((p.eval_batches * p.micro_batch) as u64);
    let mut sum = 0.0;
    let mut tokens = 0.0;
    let mut b = rank as u64;
    while b * (p.micro_batch as u64) < rows {
        let from = b * p.micro_batch as u64;
        let to = (from + p.micro_batch as u64).min(rows);
        let batch = (from..to).map(|i| val.get(i)).collect::<Result<Vec<_>>>()?;
        let (ids, labels, docs) = stack(&batch, device);
        let n = scored_tokens_t(&labels);
        if n > 0 {
            let loss = precision::autocast(precision, || -> Result<f64> {
                let logits = match &docs {
                    Some(d) => model.forward_packed(&ids, d),
                    None => model.forward(&ids, None),
                };
                Ok(
                    next_token_loss(&logits.to_kind(Kind::Float), &labels, IGNORE)
                        .double_value(&[]),
                )
            })?;
            sum += loss * n as f64;
            tokens += n as f64;
        }
        b += world as u64;
    }
    let total = all_reduce_scalars(comm, &[sum, tokens])?;
    if total[1] == 0.0 {
        bail!("the validation rows have no token to score");
    }
    Ok(total[0] / total[1])
}

fn stack(rows: &[Sample], device: Device) -> (Tensor, Tensor, Option<Tensor>) {
    let t = |f: &dyn Fn(&Sample) -> &[i64]| {
        Tensor::stack(
            &rows
                .iter()
                .map(|r| Tensor::from_slice(f(r)))
                .collect::<Vec<_>>(),
            0,
        )
        .to_device(device)
    };
    let ids = t(&|r| &r.ids);
    let labels = t(&|r| &r.labels);
    let docs = rows
        .iter()
        .all(|r| r.doc_ids.is_some())
        .then(|| t(&|r| r.doc_ids.as_deref().unwrap_or(&[])));
    (ids, labels, docs)
}

/// Targets a row scores: labels after the first position that are not ignored.
fn scored_tokens(s: &Sample) -> u64 {
    s.labels.iter().skip(1).filter(|&&l| l != IGNORE).count() as u64
}

fn scored_tokens_t(labels: &Tensor) -> i64 {
    let t = labels.size()[1];
    labels
        .narrow(1, 1, t - 1)
        .ne(IGNORE)
        .sum(Kind::Int64)
        .int64_value(&[])
}

/// Training FLOPs per token (PaLM, Chowdhery et al. 2022, appendix B): 6 per weight outside the
/// input embedding, plus 12 · layers · hidden · sequence for attention scores and values.
fn flops_per_token(model: &Llama, seq_len: usize) -> f64 {
    let c = &model.config;
    let params: i64 = model
        .named_tensors()
        .iter()
        .filter(|(n, _)| n != "model.embed_tokens.weight" || c.tie_word_embeddings)
        .map(|(_, t)| t.numel() as i64)
        .sum();
    6.0 * params as f64 + 12.0 * c.num_hidden_layers as f64 * c.hidden_size as f64 * seq_len as f64
}

fn device_index(d: Device) -> i64 {
    match d {
        Device::Cuda(i) => i as i64,
        _ => 0,
    }
}

fn log(rank: usize, message: &str) {
    if rank == 0 {
        eprintln!("{message}");
    }
}
