//! What a checkpoint per verdict costs: the stage's side (write the record, link every record
//! into `step-N/`) and the engine's (store `step-N/` as an artifact: hash every file, upload
//! the new blob, write the manifest) on a local store, for a full MT-Bench run's 80 answers and
//! 160 verdicts of realistic size.
//!
//! `cargo run --release -p leo-plugin-mtbench --example checkpoint_cost [STORE_DIR]`

use std::time::Instant;

use leo_plugin::Emitter;
use leo_plugin_mtbench::judge::Message;
use leo_plugin_mtbench::records::{judgement_key, AnswerRecord, JudgementRecord, Records};

fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let store_dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("store"));
    std::fs::create_dir_all(&store_dir)?;
    let store = leo_store::ArtifactStore::open(&store_dir.display().to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let work = tmp.path().join("work");
    let ck = work.join("checkpoints");
    let mut records = Records::open(&work, &ck, None)?;
    // Checkpoint events go to stdout like the stage's; this example only times them.
    let events = Emitter::new();
    let text = "Eine Antwort des Modells, die lang genug ist, um realistisch zu sein. ".repeat(40);
    let (mut stage_ms, mut engine_ms) = (Vec::new(), Vec::new());
    for i in 0..240u32 {
        let started = Instant::now();
        if i < 80 {
            records.add_answer(
                AnswerRecord {
                    key: format!("{i:064x}"),
                    question_id: (81 + i).to_string(),
                    turns: [text.clone(), text.clone()],
                    finish: ["stop".into(), "stop".into()],
                    tokens: [700, 700],
                },
                &events,
            )?;
        } else {
            let messages = vec![
                Message::new("system", "Sie sind ein hilfreicher Assistent."),
                Message::new("user", format!("{i} {text}{text}")),
            ];
            records.add_judgement(
                JudgementRecord {
                    key: judgement_key("gpt-4", &messages),
                    question_id: (i / 2).to_string(),
                    turn: 1 + (i % 2) as u8,
                    judge_model: "gpt-4".into(),
                    prompt_name: "single-v1".into(),
                    messages,
                    judgment: format!("{text} Bewertung: [[7]]"),
                    score: 7.0,
                },
                &events,
            )?;
        }
        stage_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let dir = ck.join(format!("step-{}", i + 1));
        let started = Instant::now();
        rt.block_on(store.put_path(&dir))?;
        engine_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let stats = |v: &[f64]| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        format!(
            "mean {mean:.2} ms, last {:.2} ms, total {:.0} ms",
            v[v.len() - 1],
            v.iter().sum::<f64>()
        )
    };
    eprintln!("240 checkpoints (80 answers, 160 verdicts):");
    eprintln!("  stage (write + links): {}", stats(&stage_ms));
    eprintln!("  engine (store put_path): {}", stats(&engine_ms));
    Ok(())
}
