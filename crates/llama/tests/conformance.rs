//! leo-llama against Hugging Face transformers (run through `just test`, which provides the
//! Python venv): logits, sharded checkpoints, greedy generation with the KV cache, and
//! log-likelihoods, on a tiny random Llama with GQA and linear RoPE scaling.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use leo_llama::tch::{Device, Kind, Tensor};
use leo_llama::{next_token_loss, GenerateOptions, KvCache, Llama};
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

/// Checks a training loss and the gradients its backward pass leaves against transformers'.
fn check_training(backward: impl Fn(&Llama, &Tensor) -> f64) {
    let (dir, r) = reference();
    let mut model = load("model");
    model.make_trainable();
    let rows: Vec<Vec<i64>> = r["train"]["batch"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    let batch = Tensor::from_slice(&rows.concat()).view([rows.len() as i64, -1]);
    let loss = backward(&model, &batch);
    let want = r["train"]["loss"].as_f64().unwrap();
    assert!(
        (loss - want).abs() < 1e-5,
        "loss {loss} vs transformers {want}"
    );
    let want: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("grads.safetensors"))
        .expect("grads.safetensors")
        .into_iter()
        .collect();
    let params = model.named_tensors();
    assert_eq!(params.len(), want.len());
    for (name, p) in params {
        let g = p.grad();
        assert!(g.defined(), "{name} has no gradient");
        let diff = max_abs(&g, &want[&name]);
        assert!(diff < 1e-5, "{name}: max |Δgrad| = {diff}");
    }
}

#[test]
fn training_loss_and_gradients_match_transformers() {
    check_training(|model, batch| {
        let loss = next_token_loss(&model.forward(batch, None), batch, -100);
        loss.backward();
        loss.double_value(&[])
    });
}

#[test]
fn the_chunked_training_loss_gives_the_same_loss_and_gradients() {
    check_training(|model, batch| {
        let loss = model
            .train_loss(batch, batch, None, -100)
            .expect("train_loss");
        assert_eq!(loss.tokens, batch.size()[0] * (batch.size()[1] - 1));
        let value = loss.loss.double_value(&[]);
        loss.backward(1.0);
        value
    });
}

#[test]
fn packed_documents_are_computed_as_if_each_were_alone() {
    let (_, r) = reference();
    let model = load("model");
    let p = ids(&r["prompts"][2]);
    // Row 0: documents of 20, 1 and 27 tokens; row 1: one document of 48.
    let lens = [20usize, 1, 27];
    let mut docs = Vec::new();
    for (d, &n) in lens.iter().enumerate() {
        docs.extend(std::iter::repeat_n(d as i64 + 7, n));
    }
    docs.extend(std::iter::repeat_n(3, p.len()));
    let row = Tensor::from_slice(&p);
    let batch = Tensor::stack(&[&row, &row.flip([0])], 0);
    let packed = model.forward_packed(&batch, &Tensor::from_slice(&docs).view([2, -1]));
    let mut start = 0;
    for n in lens {
        let alone = model
            .forward(&Tensor::from_slice(&p[start..start + n]).unsqueeze(0), None)
            .squeeze_dim(0);
        let diff = max_abs(&packed.get(0).narrow(0, start as i64, n as i64), &alone);
        assert!(
            diff < TOLERANCE,
            "document at {start}: max |Δlogit| = {diff}"
        );
        start += n;
    }
    let whole = model
        .forward(&row.flip([0]).unsqueeze(0), None)
        .squeeze_dim(0);
    assert!(max_abs(&packed.get(1), &whole) < TOLERANCE);
}

#[test]
fn new_models_are_initialised_like_transformers() {
    let (dir, _) = reference();
    let config = leo_llama::Config::from_file(&dir.join("model/config.json")).expect("config");
    let a = Llama::init(config.clone(), Device::Cpu, Kind::Float, 7).expect("init");
    let b = Llama::init(config, Device::Cpu, Kind::Float, 7).expect("init");
    for ((name, x), (_, y)) in a.named_tensors().into_iter().zip(b.named_tensors()) {
        assert!(
            x.equal(&y),
            "{name} differs between two inits with one seed"
        );
        if name.ends_with("norm.weight") {
            assert!(
                x.eq(1.0).all().int64_value(&[]) == 1,
                "{name} is not all ones"
            );
        } else {
            let std = x.std(true).double_value(&[]);
            assert!((std - 0.02).abs() < 0.002, "{name}: std {std}, want 0.02");
        }
    }
}

#[test]
fn generated_text_stops_at_a_stop_string_and_ends_before_it() {
    let (_, r) = reference();
    let model = load("model");
    // A word-level tokenizer over the tiny model's 128 ids: token i is the word `t{i}`.
    let vocab: serde_json::Map<String, Value> = (0..128)
        .map(|i| (format!("t{i}"), Value::from(i)))
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}
    });
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("tokenizer.json");
    std::fs::write(&path, json.to_string()).expect("write tokenizer.json");
    let tokenizer = leo_llama::Tokenizer::from_file(&path).expect("tokenizer");

    let prompt = ids(&r["generate"]["prompt"]);
    let greedy = ids(&r["generate"]["output"]);
    let words = |ts: &[i64]| {
        ts.iter()
            .map(|t| format!("t{t}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let full = words(&greedy);
    let stop = format!(" {}", words(&greedy[9..11]));
    let opts = GenerateOptions {
        max_new_tokens: 32,
        stop_strings: vec![stop.clone()],
        ..GenerateOptions::default()
    };
    let got = model
        .generate_text(&tokenizer, &prompt, &opts)
        .expect("generate_text");
    assert_eq!(got.finish, leo_llama::Finish::Stop);
    assert!(got.tokens.len() <= 11, "did not stop: {:?}", got.tokens);
    assert_eq!(got.tokens, greedy[..got.tokens.len()]);
    assert!(!got.text.contains(&stop));
    assert!(
        full.starts_with(&format!("{}{stop}", got.text)),
        "{:?}",
        got.text
    );

    let no_stop = GenerateOptions {
        max_new_tokens: 32,
        ..GenerateOptions::default()
    };
    let all = model
        .generate_text(&tokenizer, &prompt, &no_stop)
        .expect("generate_text");
    assert_eq!((all.finish, all.text), (leo_llama::Finish::Length, full));
}

#[test]
fn bf16_logits_match_transformers_in_bf16() {
    let (dir, r) = reference();
    let model = Llama::load(&dir.join("model"), Device::Cpu, Kind::BFloat16).expect("load bf16");
    assert_eq!(model.kind(), Kind::BFloat16);
    let p = ids(&r["prompts"][2]);
    let got = model
        .forward(&Tensor::from_slice(&p).unsqueeze(0), None)
        .squeeze_dim(0)
        .to_kind(Kind::Float);
    let want = tensor2(&r["bf16_logits"]);
    // bf16 keeps 8 significant bits: logits of magnitude ~1 round in steps of ~4e-3. Measured:
    // leo and transformers differ by at most one such step (0.0039), as much as transformers'
    // own bf16 and f32 logits differ (0.0032); the bound allows a few steps.
    let diff = max_abs(&got, &want);
    let vs_f32 = max_abs(&want, &tensor2(&r["logits"][2]));
    eprintln!(
        "bf16: max |Δlogit| vs transformers bf16 = {diff}, transformers bf16 vs f32 = {vs_f32}"
    );
    assert!(diff < 1e-2, "max |Δlogit| = {diff}");
}
