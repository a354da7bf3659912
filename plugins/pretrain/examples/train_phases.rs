//! Where a training update's time goes on the CPU (the profile behind docs/benchmarks.md's
//! `just bench train` findings): the pretrain stage's update rebuilt from the pieces
//! `leo_train::train` uses — packed rows, `Llama::train_loss` + `backward` per micro-batch,
//! `ShardedAdamW::step` on one rank — timed phase by phase; then the transformer against the
//! chunked output layer, and the optimizer step's own pieces on real gradients.
//!
//! Usage: train_phases TOKENS_DIR CONFIG_JSON [UPDATES=5] [THREADS=2]
//! (rows of 256 tokens, micro-batch 4, 2 micro-batches per update, as `just bench train`;
//! bench/train.py writes such a TOKENS_DIR and CONFIG_JSON).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use leo_llama::tch::{self, Device, Kind, Tensor};
use leo_llama::{Config, Llama};
use leo_train::collective::Single;
use leo_train::data::{PackedTokens, Samples};
use leo_train::zero::ShardedAdamW;
use leo_train::AdamWConfig;

const SEQ: usize = 256;
const MICRO_BATCH: u64 = 4;
const ACCUMULATION: usize = 2;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(tokens), Some(config)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: train_phases TOKENS_DIR CONFIG_JSON [UPDATES] [THREADS]");
    };
    let updates: usize = args
        .get(2)
        .map_or(Ok(5), |s| s.parse())
        .context("UPDATES")?;
    tch::set_num_threads(
        args.get(3)
            .map_or(Ok(2), |s| s.parse())
            .context("THREADS")?,
    );
    let config = Config::from_json(&std::fs::read_to_string(config)?)?;
    let rows = PackedTokens::open_dir(&PathBuf::from(tokens), SEQ, false)?;
    let mut model = Llama::init(config, Device::Cpu, Kind::Float, 0)?;
    let mut opt = ShardedAdamW::new(
        &mut model,
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.05,
        },
        0,
        1,
    )?;
    let batch = |first: u64| -> Result<Tensor> {
        let ids = (first..first + MICRO_BATCH)
            .map(|i| rows.get(i).map(|s| Tensor::from_slice(&s.ids)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&ids, 0))
    };

    println!("seconds per update: data, forward + loss, backward, optimizer step, total");
    let mut row = 0;
    for _ in 0..updates {
        let start = Instant::now();
        let (mut data, mut forward, mut backward) = (0.0, 0.0, 0.0);
        for _ in 0..ACCUMULATION {
            let t = Instant::now();
            let ids = batch(row)?;
            row += MICRO_BATCH;
            data += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let loss = model.train_loss(&ids, &ids, None, -100)?;
            let _ = loss.loss.double_value(&[]);
            forward += t.elapsed().as_secs_f64();
            let t = Instant::now();
            loss.backward(1.0 / ACCUMULATION as f64);
            backward += t.elapsed().as_secs_f64();
        }
        let t = Instant::now();
        opt.step(&mut Single, 1e-3, 1.0, Some(1.0), false)?;
        let step = t.elapsed().as_secs_f64();
        println!(
            "{data:.3} {forward:.3} {backward:.3} {step:.3} {:.3}",
            start.elapsed().as_secs_f64()
        );
    }

    // One micro-batch: the transformer alone against the whole chunked loss (best of 5).
    let ids = batch(0)?;
    let (mut trunk, mut whole, mut back) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..5 {
        let t = Instant::now();
        let hidden = model.hidden(&ids, None);
        let _ = hidden.sum(Kind::Float).double_value(&[]);
        trunk = trunk.min(t.elapsed().as_secs_f64());
        drop(hidden);
        let t = Instant::now();
        let loss = model.train_loss(&ids, &ids, None, -100)?;
        let _ = loss.loss.double_value(&[]);
        whole = whole.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        loss.backward(1.0);
        back = back.min(t.elapsed().as_secs_f64());
        opt.zero_grad()?;
    }
    println!(
        "micro-batch of {MICRO_BATCH} x {SEQ}: transformer forward {trunk:.3} s, output layer (loss and its gradients) {:.3} s, backward {back:.3} s",
        whole - trunk
    );

    // The optimizer step's pieces on real gradients (best of 7).
    let loss = model.train_loss(&ids, &ids, None, -100)?;
    loss.backward(1.0);
    let named = model.named_tensors();
    let n: i64 = named.iter().map(|(_, t)| t.numel() as i64).sum();
    let flat = Tensor::zeros([n], (Kind::Float, Device::Cpu));
    let _guard = tch::no_grad_guard();
    let time = |name: &str, f: &mut dyn FnMut()| {
        let mut best = f64::MAX;
        for _ in 0..7 {
            let t = Instant::now();
            f();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{name}: {:.1} ms", best * 1e3);
    };
    println!("over the {n} gradients:");
    time("  copy into one flat buffer (ZeRO-1)", &mut || {
        let mut offset = 0;
        for (_, p) in &named {
            let g = p.grad();
            let k = g.numel() as i64;
            flat.narrow(0, offset, k).copy_(&g.reshape([-1]));
            offset += k;
        }
    });
    time("  squared norm as square().sum(Double)", &mut || {
        let _ = flat.square().sum(Kind::Double).double_value(&[]);
    });
    time("    of which square()", &mut || {
        let _ = flat.square();
    });
    let squares = flat.square();
    time("    of which sum(Double) of f32", &mut || {
        let _ = squares.sum(Kind::Double).double_value(&[]);
    });
    time("  squared norm as norm()^2 (f32, cascade sum)", &mut || {
        let _ = flat.norm().double_value(&[]).powi(2);
    });
    time("  squared norm as dot(g, g) (f32)", &mut || {
        let _ = flat.dot(&flat).double_value(&[]);
    });
    time("  clipping: mul_ by a scalar", &mut || {
        let _ = flat.shallow_clone().g_mul_scalar_(0.999);
    });
    Ok(())
}
