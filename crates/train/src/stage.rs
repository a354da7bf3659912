//! What the training stages (`pretrain`, `sft`) share around the loop: their ranks, device,
//! checkpoint to resume from, the tokenizer files that go beside the weights, and params that
//! are partly the stage's and partly the trainer's.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use leo_plugin::{Invocation, ParamError};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tch::Device;

use crate::checkpoint::TrainerState;
use crate::collective::{Collective, Single, TcpRing};
use crate::params::{DeviceChoice, TrainParams};

/// Splits a stage's params into its own (`own` keys) and the trainer's (the rest) and
/// deserialises both; an error names the field (`lr`, `model.hidden_size`).
pub fn split_params<T: DeserializeOwned>(
    params: &Value,
    own: &[&str],
) -> Result<(T, TrainParams), ParamError> {
    let Some(map) = params.as_object() else {
        return Err(ParamError::new("", "params must be a table"));
    };
    let (mut mine, mut rest) = (Map::new(), Map::new());
    for (k, v) in map {
        if own.contains(&k.as_str()) {
            mine.insert(k.clone(), v.clone());
        } else {
            rest.insert(k.clone(), v.clone());
        }
    }
    let stage: T = parse(Value::Object(mine), own)?;
    Ok((stage, train_params(Value::Object(rest), own)?))
}

/// The trainer's params from a table holding only those; `own` names the stage's other keys
/// for the message about an unknown field.
pub fn train_params(params: Value, own: &[&str]) -> Result<TrainParams, ParamError> {
    let train: TrainParams = parse(params, own)?;
    train
        .check()
        .map_err(|(field, message)| ParamError::new(field, message))?;
    Ok(train)
}

fn parse<T: DeserializeOwned>(v: Value, own: &[&str]) -> Result<T, ParamError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let field = e.path().to_string();
        let mut message = e.inner().to_string();
        if message.starts_with("unknown field") {
            // serde lists one struct's fields; name the stage's too.
            message = format!("{message}; the stage's own params are {}", own.join(", "));
        }
        ParamError::new(if field == "." { String::new() } else { field }, message)
    })
}

/// The collective for this attempt's rank: nothing to talk to for one rank, a TCP ring through
/// the engine's rendezvous address otherwise.
pub fn collective(inv: &Invocation) -> Result<Box<dyn Collective>> {
    let (rank, world) = (inv.rank as usize, inv.world_size as usize);
    if world <= 1 {
        return Ok(Box::new(Single));
    }
    let Some(addr) = inv.rendezvous.as_deref() else {
        bail!("rank {rank} of {world}: the invocation has no rendezvous address");
    };
    Ok(Box::new(TcpRing::connect(addr, rank, world)?))
}

/// The device this rank trains on: GPU `local rank` when CUDA is there (and wanted).
pub fn device(choice: DeviceChoice, world: usize, rank: usize) -> Result<Device> {
    let cuda = tch::Cuda::is_available();
    let device = match choice {
        DeviceChoice::Cpu => Device::Cpu,
        DeviceChoice::Cuda if !cuda => bail!("device = \"cuda\" but libtorch sees no CUDA device"),
        DeviceChoice::Cuda | DeviceChoice::Auto if cuda => {
            let gpus = tch::Cuda::device_count() as usize;
            let local = std::env::var("LOCAL_RANK")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(rank % gpus.max(1));
            Device::Cuda(local)
        }
        _ => Device::Cpu,
    };
    if device.is_cuda() && world > 1 {
        bail!(
            "data-parallel training on CUDA needs the NCCL collective, which this build does not have yet; run one rank per stage on GPUs, or the CPU ring"
        );
    }
    Ok(device)
}

/// The checkpoint the engine hands this attempt, checked complete.
pub fn resume_point(inv: &Invocation) -> Result<Option<(PathBuf, TrainerState)>> {
    let Some(r) = &inv.resume_from else {
        return Ok(None);
    };
    let state = TrainerState::load(&r.path)
        .with_context(|| format!("resuming stage {} from checkpoint {}", inv.stage, r.digest))?;
    Ok(Some((r.path.clone(), state)))
}

/// Tokenizer files a checkpoint folder carries so that `AutoTokenizer` loads it.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
];

/// Copies the tokenizer files found at `from` (a folder, or a `tokenizer.json` itself) into
/// `to`; returns how many.
pub fn copy_tokenizer(from: &Path, to: &Path) -> Result<usize> {
    let mut n = 0;
    if from.is_file() {
        let dst = to.join("tokenizer.json");
        std::fs::copy(from, &dst)
            .with_context(|| format!("copying {} to {}", from.display(), dst.display()))?;
        return Ok(1);
    }
    for name in TOKENIZER_FILES {
        let src = from.join(name);
        if src.is_file() {
            let dst = to.join(name);
            std::fs::copy(&src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Rank 0 writes the trained model as the stage's output `model`: an HF checkpoint in `kind`,
/// with `model_files` (the tokenizer) beside it.
pub fn write_output_model(
    inv: &Invocation,
    events: &leo_plugin::Emitter,
    model: &leo_llama::Llama,
    kind: tch::Kind,
    model_files: &dyn Fn(&Path) -> Result<()>,
) -> Result<()> {
    if inv.rank != 0 {
        return Ok(());
    }
    let out = inv.output_dir.join("model");
    model
        .save_as(&out, 5 << 30, kind)
        .with_context(|| format!("writing the output model to {}", out.display()))?;
    model_files(&out)?;
    events.output("model", &out)?;
    Ok(())
}

/// Path of a stage input, with an error naming the stage and the input.
pub fn input<'a>(inv: &'a Invocation, name: &str) -> Result<&'a Path> {
    inv.inputs
        .get(name)
        .map(|a| a.path.as_path())
        .with_context(|| {
            format!(
                "stage {}: no input `{name}` (inputs: {})",
                inv.stage,
                inv.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
}
