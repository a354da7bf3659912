//! leo-train's AdamW against `torch.optim.AdamW(fused=True)` (run through `just test`, which
//! provides the Python venv): three steps of a tiny Llama give the same losses and weights.

use std::path::Path;

use leo_llama::tch::{Device, Kind, Tensor};
use leo_llama::{next_token_loss, Llama};
use leo_train::{AdamW, AdamWConfig};
use serde_json::Value;

fn batch(v: &Value) -> Tensor {
    let rows: Vec<Vec<i64>> = v
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_i64().expect("id"))
                .collect()
        })
        .collect();
    Tensor::from_slice(&rows.concat()).view([rows.len() as i64, -1])
}

#[test]
fn three_steps_match_torch_fused_adamw() {
    let python = std::env::var_os("LEO_TORCH_PYTHON").expect(
        "LEO_TORCH_PYTHON is not set: run the tests with `just test` (it sets up the torch venv)",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/adamw_reference.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(dir.path())
        .output()
        .expect("run adamw_reference.py");
    assert!(
        out.status.success(),
        "adamw_reference.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("reference.json")).expect("reference.json"),
    )
    .expect("json");

    let mut model =
        Llama::load(&dir.path().join("initial"), Device::Cpu, Kind::Float).expect("load");
    model.make_trainable();
    let config = AdamWConfig {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let mut opt = AdamW::new(model.named_tensors(), config).expect("optimizer");
    let (decay, no_decay) = opt.groups();
    assert!(decay.contains(&"model.layers.0.mlp.up_proj.weight"));
    assert!(no_decay.contains(&"model.norm.weight"));
    for (i, (b, lr)) in r["batches"]
        .as_array()
        .unwrap()
        .iter()
        .zip(r["lrs"].as_array().unwrap())
        .enumerate()
    {
        let ids = batch(b);
        opt.set_lr(lr.as_f64().unwrap());
        let loss = next_token_loss(&model.forward(&ids, None), &ids, -100);
        let want = r["losses"][i].as_f64().unwrap();
        let got = loss.double_value(&[]);
        assert!((got - want).abs() < 1e-5, "step {i}: loss {got} vs {want}");
        loss.backward();
        opt.step().expect("step");
        opt.zero_grad().expect("zero_grad");
        assert!(!model.named_tensors()[0].1.grad().defined());
    }
    assert_eq!(opt.steps(), 3);
    let trained =
        Llama::load(&dir.path().join("trained"), Device::Cpu, Kind::Float).expect("load trained");
    for ((name, got), (_, want)) in model.named_tensors().iter().zip(trained.named_tensors()) {
        let diff = (got - &want).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{name}: max |Δw| = {diff} after three steps");
    }
}

#[test]
fn parameters_must_be_trainable() {
    let config = leo_llama::Config::from_json(
        r#"{"vocab_size": 8, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2}"#,
    )
    .expect("config");
    let model = Llama::init(config, Device::Cpu, Kind::Float, 0).expect("init");
    let err = AdamW::new(model.named_tensors(), AdamWConfig::default())
        .err()
        .expect("frozen weights are refused");
    assert!(format!("{err}").contains("make_trainable"), "{err}");
}
