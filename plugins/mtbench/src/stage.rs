//! The stage: inputs and params in, answers then verdicts (each checkpointed as it arrives),
//! then the outputs `answers` (FastChat's model_answer JSONL), `judgements` (JSONL) and
//! `report` (report.json), and the scores as metrics.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use leo_plugin::{Emitter, Invocation, ParamError, Plugin};
use serde_json::{json, Value};

use crate::answer::{self, Answerer};
use crate::client::{ApiKey, ChatClient, RetryPolicy};
use crate::judge::{parse_score, JudgePrompts};
use crate::params::Params;
use crate::questions::{self, Question};
use crate::records::{hash, judgement_key, AnswerRecord, JudgementRecord, Records};
use crate::report::{aggregate, JudgeInfo, Verdict};

pub struct Mtbench;

pub const OUTPUTS: &[&str] = &["report", "answers", "judgements"];

impl Plugin for Mtbench {
    fn name(&self) -> &'static str {
        "mtbench"
    }

    fn version(&self) -> String {
        format!("mtbench-{}", env!("CARGO_PKG_VERSION"))
    }

    fn describe(&self, params: &Value) -> Result<Vec<String>, ParamError> {
        Params::parse(params)?;
        Ok(OUTPUTS.iter().map(|s| s.to_string()).collect())
    }

    fn run(&self, inv: &Invocation, events: &Emitter) -> Result<()> {
        let p = Params::parse(&inv.params).map_err(|e| anyhow::anyhow!("{e}"))?;
        let model_dir = input(inv, "model")?;
        let model_digest = inv.inputs["model"].digest.clone();
        let questions_path = input(inv, "questions")?;
        let prompts_path = input(inv, "judge_prompts")?;

        // Everything that can be wrong with the inputs or the judge's key fails here, before an
        // hour of generation.
        let all = questions::load(&questions_path)?;
        let qs = questions::select(all, &p.categories, p.limit);
        anyhow::ensure!(
            !qs.is_empty(),
            "no question is left after categories {:?} and limit {:?}",
            p.categories,
            p.limit
        );
        let prompts = JudgePrompts::load(&prompts_path)?;
        let key = p
            .judge
            .api_key_env
            .as_deref()
            .map(ApiKey::from_env)
            .transpose()?;
        let client = ChatClient::new(
            &p.judge.base_url,
            &p.judge.model,
            key,
            p.judge.max_tokens,
            Duration::from_secs_f64(p.judge.timeout_s),
            RetryPolicy {
                max_retries: p.judge.max_retries,
                ..RetryPolicy::default()
            },
        )?;
        if let Some(t) = p.threads {
            leo_llama::tch::set_num_threads(t);
        }
        let mut records = Records::open(
            &inv.work_dir,
            &inv.checkpoint_dir,
            inv.resume_from.as_ref().map(|r| r.path.as_path()),
        )?;
        if !records.is_empty() {
            eprintln!(
                "resuming with {} answer(s) and {} verdict(s) from checkpoint {}",
                records.answers.len(),
                records.judgements.len(),
                inv.resume_from.as_ref().map_or("?", |r| r.digest.as_str())
            );
        }

        // Phase 1: answers.
        let device = answer::device(p.device)?;
        let kind = answer::kind(p.dtype, device);
        let mut answerer: Option<Answerer> = None;
        let mut answers: Vec<[String; 2]> = Vec::with_capacity(qs.len());
        let total = qs.len() as u64;
        for (i, q) in qs.iter().enumerate() {
            let temperature = p.temperature_for(&q.category);
            let key = hash(&json!({
                "model": model_digest,
                "question_id": q.id,
                "turns": q.turns,
                "system_prompt": p.system_prompt,
                "temperature": temperature,
                "seed": p.seed,
                "max_new_tokens": p.max_new_tokens,
                "dtype": p.dtype,
            }));
            if let Some(r) = records.answers.get(&key) {
                answers.push(r.turns.clone());
            } else {
                if answerer.is_none() {
                    let started = Instant::now();
                    answerer = Some(Answerer::load(&model_dir, device, kind)?);
                    eprintln!(
                        "loaded {} on {device:?} as {kind:?} in {:.1} s",
                        model_dir.display(),
                        started.elapsed().as_secs_f64()
                    );
                }
                let Some(a) = answerer.as_ref() else {
                    unreachable!()
                };
                let started = Instant::now();
                let [t1, t2] = a.answer(
                    q,
                    p.system_prompt.as_deref(),
                    p.max_new_tokens,
                    temperature,
                    p.seed,
                )?;
                eprintln!(
                    "answered {} ({}, T={temperature}): {} + {} tokens ({}, {}) in {:.1} s",
                    q.id,
                    q.category,
                    t1.tokens,
                    t2.tokens,
                    t1.finish,
                    t2.finish,
                    started.elapsed().as_secs_f64()
                );
                let r = AnswerRecord {
                    key,
                    question_id: q.id.clone(),
                    turns: [t1.text, t2.text],
                    finish: [t1.finish.to_string(), t2.finish.to_string()],
                    tokens: [t1.tokens, t2.tokens],
                };
                answers.push(r.turns.clone());
                records.add_answer(r, events)?;
            }
            events.progress(i as u64 + 1, Some(total), "answers")?;
        }
        // The judge may be a model on this machine: give back what generation held.
        drop(answerer);

        // Phase 2: verdicts, one request at a time, each stored before the next is sent.
        let mut judged: Vec<(&Question, u8, String)> = Vec::with_capacity(qs.len() * 2);
        let (mut asked, mut reused) = (0usize, 0usize);
        let total = total * 2;
        for (q, a) in qs.iter().zip(&answers) {
            for turn in [1u8, 2] {
                let req = prompts.request(q, a, turn)?;
                let key = judgement_key(&p.judge.model, &req.messages);
                if records.judgements.contains_key(&key) {
                    reused += 1;
                } else {
                    let started = Instant::now();
                    let c = client.complete(&req.messages).with_context(|| {
                        format!(
                            "judging question {} turn {turn} ({})",
                            q.id, req.prompt_name
                        )
                    })?;
                    let score = parse_score(&c.content);
                    eprintln!(
                        "judged {}/{turn} with {}: {score} in {:.2} s ({} tr{})",
                        q.id,
                        req.prompt_name,
                        started.elapsed().as_secs_f64(),
                        c.tries,
                        if c.tries == 1 { "y" } else { "ies" }
                    );
                    let started = Instant::now();
                    records.add_judgement(
                        JudgementRecord {
                            key: key.clone(),
                            question_id: q.id.clone(),
                            turn,
                            judge_model: p.judge.model.clone(),
                            prompt_name: req.prompt_name.clone(),
                            messages: req.messages,
                            judgment: c.content,
                            score,
                        },
                        events,
                    )?;
                    eprintln!(
                        "checkpoint step {} written in {:.1} ms",
                        records.len(),
                        started.elapsed().as_secs_f64() * 1e3
                    );
                    asked += 1;
                }
                judged.push((q, turn, key));
                events.progress(judged.len() as u64, Some(total), "judgements")?;
            }
        }
        eprintln!("{asked} verdict(s) asked for, {reused} reused from the checkpoint");

        // Outputs.
        let model_id = inv.stage.clone();
        let answers_path = inv.output_dir.join("answers.jsonl");
        write_jsonl(
            &answers_path,
            qs.iter().zip(&answers).map(|(q, a)| {
                json!({
                    "question_id": questions::id_json(&q.id),
                    "answer_id": &hash(&json!([model_digest, q.id, a]))[..22],
                    "model_id": model_id,
                    "choices": [{"index": 0, "turns": a}],
                })
            }),
        )?;
        let mut verdicts = Vec::with_capacity(judged.len());
        let judgements_path = inv.output_dir.join("judgements.jsonl");
        let mut lines = Vec::with_capacity(judged.len());
        for (q, turn, key) in &judged {
            let r = &records.judgements[key];
            verdicts.push(Verdict {
                question_id: &q.id,
                category: &q.category,
                turn: *turn,
                score: r.score,
            });
            lines.push(json!({
                "question_id": questions::id_json(&q.id),
                "model": model_id,
                "judge": [r.judge_model, r.prompt_name],
                "judge_prompt": r.prompt_name,
                "category": q.category,
                "turn": turn,
                "score": r.score,
                "judgment": r.judgment,
                "user_prompt": r.messages.get(1).map(|m| m.content.as_str()),
                "key": key,
            }));
        }
        write_jsonl(&judgements_path, lines.into_iter())?;
        let report = aggregate(
            &verdicts,
            qs.len(),
            JudgeInfo {
                model: p.judge.model.clone(),
                base_url: p.judge.base_url.clone(),
            },
        );
        let report_path = inv.output_dir.join("report.json");
        std::fs::write(&report_path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", report_path.display()))?;
        let mut metrics = vec![
            ("mtbench/average".to_string(), report.average),
            ("mtbench/first_turn".to_string(), report.first_turn),
            ("mtbench/second_turn".to_string(), report.second_turn),
        ];
        for (c, s) in &report.per_category {
            metrics.push((format!("mtbench/{c}"), s.average));
        }
        for (name, value) in metrics {
            if let Some(v) = value {
                events.metric(None, &name, v)?;
            }
        }
        events.metric(None, "mtbench/unparsed", report.counts.unparsed as f64)?;
        eprintln!(
            "MT-Bench: average {} (first turn {}, second turn {}); {} verdicts, {} unparsable",
            fmt(report.average),
            fmt(report.first_turn),
            fmt(report.second_turn),
            report.counts.judged,
            report.counts.unparsed
        );
        events.output("report", &report_path)?;
        events.output("answers", &answers_path)?;
        events.output("judgements", &judgements_path)?;
        Ok(())
    }
}

fn fmt(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

fn input(inv: &Invocation, name: &str) -> Result<PathBuf> {
    inv.inputs
        .get(name)
        .map(|a| a.path.clone())
        .with_context(|| {
            format!(
                "stage {}: no input `{name}` (the mtbench stage needs model, questions, judge_prompts; it has: {})",
                inv.stage,
                inv.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
}

fn write_jsonl(path: &Path, lines: impl Iterator<Item = Value>) -> Result<()> {
    let ctx = || format!("writing {}", path.display());
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).with_context(ctx)?);
    for line in lines {
        serde_json::to_writer(&mut f, &line).with_context(ctx)?;
        f.write_all(b"\n").with_context(ctx)?;
    }
    f.flush().with_context(ctx)
}
