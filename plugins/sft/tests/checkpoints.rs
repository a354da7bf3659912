//! The checkpoints the training stages write, read by the peer users trust: a `pretrain` stage
//! and then an `sft` stage on its output run as the engine runs them (a plugin, an invocation),
//! and `transformers` loads both outputs with the logits leo computes. The chat checkpoint's
//! template renders conversations exactly as the stage rendered them for training.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use leo_indexed::{DType, IndexedWriter};
use leo_llama::tch::{Device, Kind, Tensor};
use leo_llama::{Llama, Tokenizer};
use leo_plugin::{Emitter, InputArtifact, Invocation, Plugin, PROTOCOL_VERSION};
use leo_plugin_sft::{read_dataset, ChatFormat, Format, OnMalformed, Sft};
use serde_json::{json, Value};

fn invocation(root: &Path, stage: &str, params: Value, inputs: &[(&str, &Path)]) -> Invocation {
    let work = root.join(stage);
    std::fs::create_dir_all(&work).expect("work dir");
    Invocation {
        protocol: PROTOCOL_VERSION,
        run_id: "test".into(),
        stage: stage.into(),
        attempt: 1,
        plugin: stage.into(),
        params,
        inputs: inputs
            .iter()
            .map(|(name, path)| {
                (
                    name.to_string(),
                    InputArtifact {
                        digest: "sha256:test".into(),
                        path: path.to_path_buf(),
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
        outputs: vec!["model".into()],
        output_dir: work.clone(),
        checkpoint_dir: work.join("checkpoints"),
        resume_from: None,
        work_dir: work,
        rank: 0,
        world_size: 1,
        rendezvous: None,
        run_context: None,
    }
}

/// German passages tokenized into a `train/` shard, as the tokenize stage lays them out.
fn tokens(root: &Path, shared: &Path, tok: &Tokenizer) -> PathBuf {
    let dir = root.join("tokens");
    std::fs::create_dir_all(dir.join("train")).expect("mkdir");
    let text =
        std::fs::read_to_string(shared.join("demo/de/germandpr-passages.txt")).expect("passages");
    let mut w = IndexedWriter::create(dir.join("train/shard-00000"), DType::U16).expect("shard");
    for line in text.lines().take(40) {
        let ids = tok.encode(line, true).expect("encode");
        w.add_document(&ids).expect("add");
    }
    w.finish().expect("finish");
    dir
}

/// leo's logits for `prompts` and transformers' for the same folder.
fn compare_with_transformers(dir: &Path, prompts: &[Vec<i64>], python: &Path) -> f64 {
    let model = Llama::load(dir, Device::Cpu, Kind::Float).expect("leo loads its checkpoint");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hf_logits.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(dir)
        .arg(serde_json::to_string(prompts).expect("json"))
        .output()
        .expect("run hf_logits.py");
    assert!(
        out.status.success(),
        "transformers could not load {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(reference["vocab_size"], model.config.vocab_size);
    let _guard = leo_llama::tch::no_grad_guard();
    let mut worst = 0f64;
    for (p, r) in prompts
        .iter()
        .zip(reference["logits"].as_array().expect("logits"))
    {
        let ours = model
            .forward(&Tensor::from_slice(p).unsqueeze(0), None)
            .squeeze_dim(0);
        let rows: Vec<Vec<f32>> = serde_json::from_value(r.clone()).expect("rows");
        let theirs = Tensor::from_slice2(&rows);
        worst = worst.max((ours - theirs).abs().max().double_value(&[]));
    }
    worst
}

#[test]
fn pretrain_and_sft_checkpoints_load_in_transformers_with_leos_logits() {
    let (Some(shared), Some(python)) = (support::shared_data(), support::python()) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let tokenizer_json = shared.join("llama2-tokenizer/tokenizer.json");
    let plain = Tokenizer::from_file(&tokenizer_json).expect("tokenizer");
    let tokens = tokens(root, &shared, &plain);
    let events = Emitter::new();

    let pretrain = invocation(
        root,
        "pretrain",
        json!({
            "seq_len": 64, "micro_batch": 2, "steps": 6, "lr": 3e-3, "threads": 1,
            "model": {"vocab_size": 32000, "hidden_size": 64, "intermediate_size": 128,
                      "num_hidden_layers": 2, "num_attention_heads": 4,
                      "num_key_value_heads": 2, "max_position_embeddings": 256,
                      "bos_token_id": 1, "eos_token_id": 2},
            "rope_scaling": {"type": "linear", "factor": 2.0},
            "max_position_embeddings": 512,
        }),
        &[("tokens", &tokens), ("tokenizer", &tokenizer_json)],
    );
    leo_plugin_pretrain::Pretrain
        .run(&pretrain, &events)
        .expect("pretrain runs");
    let base = pretrain.output_dir.join("model");
    let config: Value =
        serde_json::from_slice(&std::fs::read(base.join("config.json")).expect("config"))
            .expect("json");
    // The context was doubled with linear RoPE scaling, as LeoLM's stage 2 does.
    assert_eq!(config["max_position_embeddings"], 512);
    assert_eq!(config["rope_scaling"]["factor"], 2.0);

    let sft = invocation(
        root,
        "sft",
        json!({
            // A seeded 2% of the 2,050 conversations: a few rows of 512 tokens.
            "datasets": [{"input": "germandpr", "weight": 0.02}], "seq_len": 512, "epochs": 1,
            "micro_batch": 2, "global_batch": 4, "lr": 1e-3, "min_lr": 0.0, "threads": 1,
            "validation_fraction": 0.1, "loss_on": "assistant",
        }),
        &[
            ("model", &base),
            (
                "germandpr",
                &shared.join("demo/sft/germandpr-instruct.jsonl"),
            ),
        ],
    );
    Sft.run(&sft, &events).expect("sft runs");
    let chat = sft.output_dir.join("model");

    let chat_tok = Tokenizer::from_file(&chat.join("tokenizer.json")).expect("chat tokenizer");
    let im_start = chat_tok.token_to_id("<|im_start|>").expect("ChatML token") as i64;
    assert_eq!(chat_tok.vocab_size(), 32002);
    let prompts = vec![
        plain
            .encode("Die Hauptstadt von Hessen ist", true)
            .expect("ids")
            .iter()
            .map(|&t| i64::from(t))
            .collect::<Vec<_>>(),
        (0..100).map(|i| (i * 317 + 5) % 32000).collect(),
    ];
    let worst = compare_with_transformers(&base, &prompts, &python);
    assert!(
        worst < 1e-4,
        "pretrain checkpoint: logits differ by {worst}"
    );
    let mut chat_prompts = prompts.clone();
    chat_prompts.push(vec![1, im_start, 1404, 13, im_start + 1]);
    let worst = compare_with_transformers(&chat, &chat_prompts, &python);
    assert!(worst < 1e-4, "sft checkpoint: logits differ by {worst}");

    // The chat template in the checkpoint renders 20 training conversations as the stage did.
    let data = read_dataset(
        &shared.join("demo/sft/germandpr-instruct.jsonl"),
        Format::Auto,
        OnMalformed::Fail,
    )
    .expect("dataset");
    let convs: Vec<_> = data.conversations.iter().take(20).collect();
    let request = root.join("request.json");
    std::fs::write(
        &request,
        json!({
            "conversations": convs.iter().map(|c| &c.messages).collect::<Vec<_>>(),
            "templates": [ChatFormat::default().template()],
        })
        .to_string(),
    )
    .expect("request");
    let out = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chat_reference.py"))
        .arg(&chat)
        .arg(&request)
        .output()
        .expect("chat_reference.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Value = serde_json::from_slice(&out.stdout).expect("json");
    let rendered = &reference["templates"][0]["rendered"];
    for (i, c) in convs.iter().enumerate() {
        assert_eq!(
            rendered[i],
            ChatFormat::default().render(c),
            "conversation {i}"
        );
    }
    let config: Value =
        serde_json::from_slice(&std::fs::read(chat.join("config.json")).expect("config"))
            .expect("json");
    assert_eq!(
        config["eos_token_id"],
        im_start + 1,
        "generation stops at <|im_end|>"
    );
}
