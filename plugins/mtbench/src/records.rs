//! What the stage has done so far — answers and judgements — as small immutable files, and
//! checkpoints made of hard links to them.
//!
//! ```text
//! work_dir/records/answers/<key>.json        one question's two answers (AnswerRecord)
//! work_dir/records/judgements/<key>.json     one judge verdict (JudgementRecord)
//! checkpoint_dir/step-N/{answers,judgements}/…  hard links to every record so far; N = records
//! ```
//!
//! Every new record becomes a checkpoint of its own before the stage asks anything else: the
//! record file is written whole, a `step-N` folder of links is made, and the `checkpoint` event
//! hands it to the engine, which stores it (its files are content-addressed blobs, so each
//! record is uploaded once however many checkpoints hold it) and gives the latest to a resumed
//! attempt as `resume_from`. A record is found again by its key, a hash of everything that
//! decides its content: a changed answer, template or judge model makes a new key, so only
//! what is still valid is reused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use leo_plugin::Emitter;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::judge::Message;

/// One question's answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerRecord {
    pub key: String,
    pub question_id: String,
    pub turns: [String; 2],
    /// `stop` or `length` per turn.
    pub finish: [String; 2],
    /// Generated tokens per turn.
    pub tokens: [usize; 2],
}

/// One verdict of the judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgementRecord {
    pub key: String,
    pub question_id: String,
    pub turn: u8,
    pub judge_model: String,
    /// `single-v1`, `single-math-v1-multi-turn`, …
    pub prompt_name: String,
    /// The request's messages, exactly as sent (the key is their hash with the judge model).
    pub messages: Vec<Message>,
    pub judgment: String,
    /// -1 when the verdict has no `[[n]]` or `[n]`.
    pub score: f64,
}

/// The cache key of a judgement: SHA-256 of the judge model and the request's messages.
pub fn judgement_key(judge_model: &str, messages: &[Message]) -> String {
    hash(&serde_json::json!({ "judge_model": judge_model, "messages": messages }))
}

/// SHA-256 (hex) of a value's JSON text (serde_json writes a given value one way only).
pub fn hash(value: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(value.to_string().as_bytes()))
}

pub struct Records {
    pool: PathBuf,
    checkpoint_root: PathBuf,
    pub answers: BTreeMap<String, AnswerRecord>,
    pub judgements: BTreeMap<String, JudgementRecord>,
}

const ANSWERS: &str = "answers";
const JUDGEMENTS: &str = "judgements";

impl Records {
    /// Starts with the records of `resume_from` (a checkpoint of an earlier attempt), copied
    /// into this attempt's pool.
    pub fn open(
        work_dir: &Path,
        checkpoint_root: &Path,
        resume_from: Option<&Path>,
    ) -> Result<Records> {
        let pool = work_dir.join("records");
        for kind in [ANSWERS, JUDGEMENTS] {
            let dir = pool.join(kind);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut records = Records {
            pool,
            checkpoint_root: checkpoint_root.to_path_buf(),
            answers: BTreeMap::new(),
            judgements: BTreeMap::new(),
        };
        if let Some(from) = resume_from {
            for (key, r) in read_all::<AnswerRecord>(&from.join(ANSWERS))? {
                records.copy_in(from, ANSWERS, &key)?;
                records.answers.insert(key, r);
            }
            for (key, r) in read_all::<JudgementRecord>(&from.join(JUDGEMENTS))? {
                records.copy_in(from, JUDGEMENTS, &key)?;
                records.judgements.insert(key, r);
            }
        }
        Ok(records)
    }

    /// Records so far; the step of the next checkpoint is one more.
    pub fn len(&self) -> u64 {
        (self.answers.len() + self.judgements.len()) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn add_answer(&mut self, r: AnswerRecord, events: &Emitter) -> Result<()> {
        self.write(ANSWERS, &r.key, &r)?;
        self.answers.insert(r.key.clone(), r);
        self.checkpoint(events)
    }

    pub fn add_judgement(&mut self, r: JudgementRecord, events: &Emitter) -> Result<()> {
        self.write(JUDGEMENTS, &r.key, &r)?;
        self.judgements.insert(r.key.clone(), r);
        self.checkpoint(events)
    }

    fn write<T: Serialize>(&self, kind: &str, key: &str, r: &T) -> Result<()> {
        let path = self.pool.join(kind).join(format!("{key}.json"));
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(r)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming {}", tmp.display()))
    }

    fn copy_in(&self, from: &Path, kind: &str, key: &str) -> Result<()> {
        let name = format!("{key}.json");
        let (src, dst) = (
            from.join(kind).join(&name),
            self.pool.join(kind).join(&name),
        );
        std::fs::copy(&src, &dst)
            .map(|_| ())
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))
    }

    /// `step-N/` with a link to every record, reported to the engine. Earlier folders stay:
    /// the engine reads a checkpoint after the event, and links cost no data.
    fn checkpoint(&self, events: &Emitter) -> Result<()> {
        let step = self.len();
        let dir = self.checkpoint_root.join(format!("step-{step}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        for kind in [ANSWERS, JUDGEMENTS] {
            let to = dir.join(kind);
            std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
            let from = self.pool.join(kind);
            for entry in
                std::fs::read_dir(&from).with_context(|| format!("listing {}", from.display()))?
            {
                let entry = entry?;
                let name = entry.file_name();
                if !name.to_string_lossy().ends_with(".json") {
                    continue;
                }
                std::fs::hard_link(entry.path(), to.join(&name)).with_context(|| {
                    format!("linking {} into {}", entry.path().display(), to.display())
                })?;
            }
        }
        events
            .checkpoint(step, &dir)
            .with_context(|| format!("reporting checkpoint {}", dir.display()))
    }
}

/// Every `*.json` record of a checkpoint folder, by key; a record whose file name is not its
/// key is refused (the name is how it is found).
fn read_all<T: DeserializeOwned + HasKey>(dir: &Path) -> Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let r: T =
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(
            r.key() == stem,
            "{}: its key is {}",
            path.display(),
            r.key()
        );
        out.push((stem.to_string(), r));
    }
    Ok(out)
}

trait HasKey {
    fn key(&self) -> &str;
}
impl HasKey for AnswerRecord {
    fn key(&self) -> &str {
        &self.key
    }
}
impl HasKey for JudgementRecord {
    fn key(&self) -> &str {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_attempt_starts_with_the_checkpointed_records() {
        let work1 = tempfile::tempdir().unwrap();
        let ck1 = work1.path().join("checkpoints");
        let mut r = Records::open(work1.path(), &ck1, None).unwrap();
        let messages = vec![Message::new("system", "s"), Message::new("user", "u")];
        let key = judgement_key("judge", &messages);
        assert_ne!(key, judgement_key("judge2", &messages));
        let mut changed = messages.clone();
        changed[1].content.push('!');
        assert_ne!(key, judgement_key("judge", &changed));
        let events = Emitter::new();
        r.add_answer(
            AnswerRecord {
                key: "a1".into(),
                question_id: "81".into(),
                turns: ["x".into(), "y".into()],
                finish: ["stop".into(), "length".into()],
                tokens: [1, 2],
            },
            &events,
        )
        .unwrap();
        let j = JudgementRecord {
            key: key.clone(),
            question_id: "81".into(),
            turn: 1,
            judge_model: "judge".into(),
            prompt_name: "single-v1".into(),
            messages,
            judgment: "Bewertung: [[7]]".into(),
            score: 7.0,
        };
        r.add_judgement(j.clone(), &events).unwrap();
        assert_eq!(r.len(), 2);
        // Each checkpoint holds everything so far, and only that.
        let step1 = ck1.join("step-1");
        assert_eq!(
            std::fs::read_dir(step1.join(JUDGEMENTS)).unwrap().count(),
            0
        );
        let step2 = ck1.join("step-2");
        assert!(step2.join(JUDGEMENTS).join(format!("{key}.json")).is_file());

        let work2 = tempfile::tempdir().unwrap();
        let resumed = Records::open(work2.path(), &work2.path().join("c"), Some(&step2)).unwrap();
        assert_eq!(resumed.len(), 2);
        assert_eq!(resumed.judgements[&key], j);
        assert_eq!(resumed.answers["a1"].turns[1], "y");
    }
}
