//! The trainer end to end in one process: data-parallel ranks (threads over real TCP sockets)
//! against one rank, and a resumed run against an uninterrupted one.

use std::net::TcpListener;
use std::path::Path;

use leo_llama::tch::{Device, Kind, Tensor};
use leo_llama::{Config, Llama};
use leo_plugin::Emitter;
use leo_train::checkpoint::{self, TrainerState};
use leo_train::collective::{Collective, Single, TcpRing};
use leo_train::data::{InMemory, Sample};
use leo_train::zero::shard_file;
use leo_train::{train, Outcome, Run, TrainParams};

fn config() -> Config {
    Config::from_json(
        r#"{"vocab_size": 61, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}"#,
    )
    .unwrap()
}

/// 24 rows of 12 tokens from a fixed pattern, some positions unscored (as SFT masks prompts),
/// so micro-batches carry different numbers of scored tokens.
fn rows() -> InMemory {
    let rows = (0..24i64)
        .map(|r| {
            let ids: Vec<i64> = (0..12).map(|j| (r * 7 + j * j * 3 + r * j) % 61).collect();
            let labels = ids
                .iter()
                .enumerate()
                .map(|(j, &t)| if (j as i64 + r) % 5 == 0 { -100 } else { t })
                .collect();
            Sample {
                ids,
                labels,
                doc_ids: None,
            }
        })
        .collect();
    InMemory { rows, seq_len: 12 }
}

fn params(steps: u64) -> TrainParams {
    TrainParams {
        steps,
        micro_batch: 2,
        global_batch: Some(8),
        lr: 3e-3,
        min_lr: 3e-4,
        warmup_steps: 2,
        weight_decay: 0.1,
        max_grad_norm: Some(0.5),
        eval_batches: 2,
        ..TrainParams::default()
    }
}

/// The model a run starts from. Made before any rank thread starts: the seeded initialisation
/// uses libtorch's global generator.
fn start(resume: Option<&Path>) -> Llama {
    match resume {
        Some(dir) => Llama::load(&dir.join("model"), Device::Cpu, Kind::Float).unwrap(),
        None => init(11),
    }
}

fn init(seed: i64) -> Llama {
    // Tests run in parallel threads: one initialisation at a time.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INIT.lock().unwrap();
    Llama::init(config(), Device::Cpu, Kind::Float, seed).unwrap()
}

fn run_rank(
    model: Llama,
    comm: &mut dyn Collective,
    p: &TrainParams,
    ckpt: &Path,
    resume: Option<&Path>,
) -> Outcome {
    let data = rows();
    let resume = resume.map(|d| (d.to_path_buf(), TrainerState::load(d).unwrap()));
    let events = Emitter::new();
    let none = |_: &Path| Ok(());
    train(
        model,
        comm,
        Run {
            params: p,
            record: serde_json::json!({}),
            train: &data,
            validation: Some(&data),
            checkpoint_dir: ckpt.to_path_buf(),
            resume,
            events: &events,
            model_files: &none,
        },
    )
    .unwrap()
}

fn weights(m: &Llama) -> Vec<(String, Tensor)> {
    m.named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect()
}

#[test]
fn two_ranks_match_one_rank_with_the_same_global_batch() {
    let p = params(10);
    let one_dir = tempfile::tempdir().unwrap();
    let one = run_rank(start(None), &mut Single, &p, one_dir.path(), None);

    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let two_dir = tempfile::tempdir().unwrap();
    let mut p2 = p.clone();
    p2.checkpoint_every = 5;
    // Rank 1 starts from other weights: training must begin from rank 0's.
    let models = [init(11), init(99)];
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = models
            .into_iter()
            .enumerate()
            .map(|(rank, model)| {
                let (addr, p2, dir) = (&addr, &p2, two_dir.path());
                s.spawn(move || {
                    let mut ring = TcpRing::connect(addr, rank, 2).unwrap();
                    run_rank(model, &mut ring, p2, dir, None)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Same global batch (8 rows): one rank accumulates 4 micro-batches of 2, two ranks 2 each.
    for (rank, o) in outcomes.iter().enumerate() {
        for ((name, a), (_, b)) in weights(&one.model).iter().zip(weights(&o.model)) {
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "rank {rank}, {name}: {diff}");
        }
        for ((s1, l1), (s2, l2)) in one.losses.iter().zip(&o.losses) {
            assert_eq!(s1, s2);
            assert!((l1 - l2).abs() < 1e-5, "step {s1}: {l1} vs {l2}");
        }
    }
    // Training did something, and validation ran.
    assert!(one.losses[9].1 < one.losses[0].1 - 0.2, "{:?}", one.losses);
    assert!(one.last_val_loss.is_some());

    // Each rank holds only its half of the optimizer state.
    let numel: usize = weights(&one.model).iter().map(|(_, t)| t.numel()).sum();
    let step5 = checkpoint::step_dir(two_dir.path(), 5).join("optimizer");
    for rank in 0..2 {
        let tensors = Tensor::read_safetensors(step5.join(shard_file(rank, 2))).unwrap();
        for (name, t) in tensors {
            assert_eq!(t.size(), [numel.div_ceil(2) as i64], "{name}");
        }
    }
    assert!(!step5.join(shard_file(0, 1)).exists());
}

#[test]
fn a_resumed_run_repeats_the_uninterrupted_losses_exactly() {
    let mut p = params(10);
    p.checkpoint_every = 4;
    let dir = tempfile::tempdir().unwrap();
    let full = run_rank(start(None), &mut Single, &p, dir.path(), None);
    assert_eq!(
        checkpoint::latest(dir.path()),
        Some(dir.path().join("step-8"))
    );

    // Continue from step 4 as a killed attempt would, into a fresh checkpoint folder.
    let again = tempfile::tempdir().unwrap();
    let from = checkpoint::step_dir(dir.path(), 4);
    let resumed = run_rank(
        start(Some(&from)),
        &mut Single,
        &p,
        again.path(),
        Some(&from),
    );
    assert_eq!(resumed.losses.len(), 6);
    assert_eq!(resumed.losses[..], full.losses[4..]);
    for ((name, a), (_, b)) in weights(&full.model).iter().zip(weights(&resumed.model)) {
        assert!(a.equal(&b), "{name} differs after resuming");
    }
    let state = TrainerState::load(&checkpoint::step_dir(dir.path(), 8)).unwrap();
    assert_eq!(
        (state.step, state.samples_consumed, state.world_size),
        (8, 64, 1)
    );
}
