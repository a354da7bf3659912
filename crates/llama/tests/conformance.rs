//! leo-llama against Hugging Face transformers (run through `just test`, which provides the
//! Python venv): logits, sharded checkpoints, greedy generation with the KV cache, and
//! log-likelihoods, on a tiny random Llama with GQA and linear RoPE scaling.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use leo_llama::tch::{Device, Kind, Tensor};
use leo_llama::{GenerateOptions, KvCache, Llama};
use serde_json::Value;

const TOLERANCE: f64 = 1e-4;

/// Builds the reference once per test process.
fn reference() -> &'static (PathBuf, Value) {
    static REF: OnceLock<(PathBuf, Value)> = OnceLock::new();
    REF.get_or_init(|| {
        let python = std::env::var_os("LEO_TORCH_PYTHON")
            .expect("LEO_TORCH_PYTHON is not set: run the tests with `just test` (it sets up the torch venv)");
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference.py");
        let out = std::process::Command::new(python)
            .arg(&script)
            .arg(&dir)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .expect("run reference.py");
        assert!(out.status.success(), "reference.py failed: {}", String::from_utf8_lossy(&out.stderr));
        let json = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
        (dir, serde_json::from_str(&json).expect("reference json"))
    })
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_i64().expect("id"))
        .collect()
}

fn tensor2(v: &Value) -> Tensor {
    let rows: Vec<Vec<f32>> = v
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("f") as f32)
                .collect()
        })
        .collect();
    let n = rows.len() as i64;
    let flat: Vec<f32> = rows.into_iter().flatten().collect();
    Tensor::from_slice(&flat).view([n, -1])
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn load(name: &str) -> Llama {
    let (dir, _) = reference();
    Llama::load(&dir.join(name), Device::Cpu, Kind::Float).expect("load model")
}

#[test]
fn logits_match_transformers_including_beyond_the_unscaled_context() {
    let (_, r) = reference();
    let model = load("model");
    assert_eq!(model.config.rope_scaling.map(|s| s.factor), Some(2.0));
    for (prompt, want) in r["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(r["logits"].as_array().unwrap())
    {
        let p = ids(prompt);
        let got = model
            .forward(&Tensor::from_slice(&p).unsqueeze(0), None)
            .squeeze_dim(0);
        let diff = max_abs(&got, &tensor2(want));
        assert!(
            diff < TOLERANCE,
            "prompt of {} tokens: max |Δlogit| = {diff}",
            p.len()
        );
    }
}

#[test]
fn sharded_checkpoints_load_to_the_same_model() {
    let (dir, r) = reference();
    assert!(dir
        .join("model-sharded/model.safetensors.index.json")
        .exists());
    let model = load("model-sharded");
    let p = ids(&r["prompts"][2]);
    let got = model
        .forward(&Tensor::from_slice(&p).unsqueeze(0), None)
        .squeeze_dim(0);
    assert!(max_abs(&got, &tensor2(&r["logits"][2])) < TOLERANCE);
}

#[test]
fn greedy_generation_equals_transformers_generate() {
    let (_, r) = reference();
    let model = load("model");
    let prompt = ids(&r["generate"]["prompt"]);
    let opts = GenerateOptions {
        max_new_tokens: 32,
        ..GenerateOptions::default()
    };
    let got = model.generate(&prompt, &opts).expect("generate");
    assert_eq!(got, ids(&r["generate"]["output"]));
}

#[test]
fn cached_and_uncached_forward_passes_agree() {
    let (_, r) = reference();
    let model = load("model");
    let p = ids(&r["prompts"][2]);
    let full = model.forward(&Tensor::from_slice(&p).unsqueeze(0), None);
    // Prefill 20 positions, then a block of 12, then one at a time.
    let mut cache = KvCache::new();
    let mut parts =
        vec![model.forward(&Tensor::from_slice(&p[..20]).unsqueeze(0), Some(&mut cache))];
    parts.push(model.forward(
        &Tensor::from_slice(&p[20..32]).unsqueeze(0),
        Some(&mut cache),
    ));
    for &id in &p[32..] {
        parts.push(model.forward(&Tensor::from_slice(&[id]).unsqueeze(0), Some(&mut cache)));
    }
    assert_eq!(cache.len(), p.len() as i64);
    let incremental = Tensor::cat(&parts, 1);
    let diff = max_abs(&full, &incremental);
    assert!(diff < TOLERANCE, "max |Δlogit| cached vs uncached = {diff}");
}

#[test]
fn loglikelihoods_equal_transformers_sums() {
    let (_, r) = reference();
    let model = load("model");
    let pairs = r["loglikelihood"].as_array().unwrap();
    assert_eq!(pairs.len(), 50);
    let requests: Vec<(Vec<i64>, Vec<i64>)> = pairs
        .iter()
        .map(|p| (ids(&p["context"]), ids(&p["continuation"])))
        .collect();
    let got = model.loglikelihood(&requests).expect("loglikelihood");
    for (i, ((logprob, greedy), want)) in got.iter().zip(pairs).enumerate() {
        let diff = (logprob - want["logprob"].as_f64().unwrap()).abs();
        assert!(diff < TOLERANCE, "pair {i}: |Δ log p| = {diff}");
        assert_eq!(
            *greedy,
            want["greedy"].as_bool().unwrap(),
            "pair {i}: is_greedy"
        );
    }
}

#[test]
fn inputs_beyond_the_context_or_vocabulary_are_errors() {
    let model = load("model");
    let long = vec![3i64; 65];
    assert!(model.loglikelihood(&[(long, vec![1])]).is_err());
    assert!(model
        .generate(
            &[200],
            &GenerateOptions {
                max_new_tokens: 1,
                ..Default::default()
            }
        )
        .is_err());
}

#[test]
fn transformers_loads_what_leo_writes() {
    let (dir, r) = reference();
    let model = load("model");
    let out = tempfile::tempdir().expect("temp dir");
    let saved = out.path().join("saved");
    model.save(&saved, 40_000).expect("save");
    let shards: Vec<_> = std::fs::read_dir(&saved)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        .collect();
    assert!(
        shards.len() > 1,
        "expected several shards, got {}",
        shards.len()
    );
    let prompt = ids(&r["prompts"][2]);
    let python = std::env::var_os("LEO_TORCH_PYTHON").expect("LEO_TORCH_PYTHON");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_saved.py");
    let run = std::process::Command::new(python)
        .arg(&script)
        .arg(&saved)
        .arg(serde_json::to_string(&prompt).unwrap())
        .output()
        .expect("run check_saved.py");
    assert!(
        run.status.success(),
        "transformers could not load leo's checkpoint: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let got: Value = serde_json::from_slice(&run.stdout).expect("json");
    assert!(max_abs(&tensor2(&got["logits"]), &tensor2(&r["logits"][2])) < TOLERANCE);
    // And leo reads its own output back to the same model.
    let again = Llama::load(&saved, Device::Cpu, Kind::Float).expect("reload");
    assert_eq!(again.config, model.config);
    let _ = dir;
}

#[test]
fn resizing_the_vocabulary_keeps_existing_tokens_and_starts_new_ones_at_the_mean() {
    let (_, r) = reference();
    let mut model = load("model");
    let p = ids(&r["prompts"][1]);
    let before = model
        .forward(&Tensor::from_slice(&p).unsqueeze(0), None)
        .squeeze_dim(0);
    model.resize_token_embeddings(130).expect("resize");
    assert_eq!(model.config.vocab_size, 130);
    let after = model
        .forward(&Tensor::from_slice(&p).unsqueeze(0), None)
        .squeeze_dim(0);
    assert_eq!(after.size(), [p.len() as i64, 130]);
    assert!(max_abs(&after.narrow(1, 0, 128), &before) < 1e-6);
    // The new tokens can be fed in, and the model still saves and loads.
    let with_new: Vec<i64> = p.iter().copied().chain([128, 129]).collect();
    let _ = model.forward(&Tensor::from_slice(&with_new).unsqueeze(0), None);
    assert!(model.resize_token_embeddings(100).is_err());
    let tmp = tempfile::tempdir().expect("temp dir");
    model.save(tmp.path(), 1 << 30).expect("save");
    assert_eq!(
        Llama::load(tmp.path(), Device::Cpu, Kind::Float)
            .expect("load")
            .config
            .vocab_size,
        130
    );
}
