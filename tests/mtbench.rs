//! The `mtbench` stage through `leo run`, judged by a real model behind `leo-torch serve`: a
//! tiny chat model (A) answers MT-Bench-DE questions; a second tiny model (B), chat-tuned by
//! the sft stage to answer every judge prompt with a verdict (`Bewertung: [[7]]` for a first
//! turn, `[[4]]` for a second), judges them over HTTP. The engine is SIGKILLed during the judge
//! phase; `leo resume` finishes the stage without asking the judge again anything it had
//! stored, every verdict is made and parsed, the report is what the verdicts say, and the
//! judge's API key (a secret in leo's environment) is nowhere in the run's files.
//!
//! Needs `leo-torch` beside `leo` (`cargo build --workspace`) and ../shared/data.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use leo_e2e::*;
use serde_json::{json, Value};

const KEY: &str = "sk-mtbench-e2e-7f3a9c1b5d2e8f40";

fn shared_data() -> PathBuf {
    let root = repo_root().join("../shared/data");
    // Fails (never skips) when the data is missing: CI must have it.
    assert!(
        root.join("mt-bench-de/questions_de.json").exists()
            && root.join("mt-bench-de/judge_prompts_de.json").exists()
            && root.join("demo/sft/germandpr-instruct.jsonl").exists()
            && root.join("llama2-tokenizer/tokenizer.json").exists(),
        "this test needs ../shared/data (mt-bench-de, demo, llama2-tokenizer) beside the repository"
    );
    root
}

/// `template` with FastChat's `{name}` placeholders filled (the German templates have no
/// literal braces).
fn fill(template: &str, fields: &[(&str, &str)]) -> String {
    fields.iter().fold(template.to_string(), |t, (k, v)| {
        t.replace(&format!("{{{k}}}"), v)
    })
}

/// The judge's training conversations: every question's two judge prompts as the stage builds
/// them, with answers cut from German passages, each answered with its turn's verdict.
fn verdict_conversations(data: &Path) -> String {
    let questions: Value = serde_json::from_slice(
        &std::fs::read(data.join("mt-bench-de/questions_de.json")).expect("questions"),
    )
    .expect("questions JSON");
    let prompts: Value = serde_json::from_slice(
        &std::fs::read(data.join("mt-bench-de/judge_prompts_de.json")).expect("judge prompts"),
    )
    .expect("judge prompts JSON");
    let passages =
        std::fs::read_to_string(data.join("demo/de/germandpr-passages.txt")).expect("passages");
    let answers: Vec<String> = passages
        .lines()
        .map(|l| l.chars().take(120).collect())
        .collect();
    let mut out = String::new();
    for (i, (_, q)) in questions.as_object().expect("object").iter().enumerate() {
        let turns: Vec<&str> = q["turns"]
            .as_array()
            .expect("turns")
            .iter()
            .map(|t| t.as_str().expect("turn"))
            .collect();
        let reference: Option<Vec<&str>> = q["reference"]
            .as_array()
            .map(|r| r.iter().map(|t| t.as_str().expect("reference")).collect());
        let (a1, a2) = (
            &answers[i % answers.len()],
            &answers[(i + 7) % answers.len()],
        );
        for turn in [1, 2] {
            let name = match (reference.is_some(), turn) {
                (false, 1) => "single-v1",
                (false, _) => "single-v1-multi-turn",
                (true, 1) => "single-math-v1",
                (true, _) => "single-math-v1-multi-turn",
            };
            let mut fields = vec![
                ("question", turns[0]),
                ("answer", a1.as_str()),
                ("question_1", turns[0]),
                ("question_2", turns[1]),
                ("answer_1", a1.as_str()),
                ("answer_2", a2.as_str()),
            ];
            if let Some(r) = &reference {
                fields.push(("ref_answer_1", r[0]));
                fields.push(("ref_answer_2", r[1]));
            }
            let p = &prompts[name];
            let verdict = if turn == 1 {
                "Bewertung: [[7]]"
            } else {
                "Bewertung: [[4]]"
            };
            let conversation = json!({"conversations": [
                {"from": "system", "value": p["system_prompt"]},
                {"from": "human", "value": fill(p["prompt_template"].as_str().expect("template"), &fields)},
                {"from": "gpt", "value": verdict},
            ]});
            out.push_str(&format!("{conversation}\n"));
        }
    }
    out
}

/// tokenize -> pretrain (a tiny Llama with a 2,048-token context) -> two sft stages: the chat
/// model under test and the judge.
fn models_workflow(sb: &Sandbox, data: &Path) -> String {
    let passages =
        std::fs::read_to_string(data.join("demo/de/germandpr-passages.txt")).expect("passages");
    let docs: String = passages
        .lines()
        .take(40)
        .enumerate()
        .map(|(i, l)| format!("{}\n", json!({"id": i.to_string(), "text": l})))
        .collect();
    sb.write("docs.jsonl", docs);
    sb.write("verdicts.jsonl", verdict_conversations(data));
    format!(
        r#"
[workflow]
name = "mtbench"

[stages.tokenize]
plugin = "tokenize"
inputs = {{ documents = "file://${{workflow.dir}}/docs.jsonl", tokenizer = "file://{tok}" }}
params = {{ validation_fraction = 0.1, seed = 1 }}

[stages.pretrain]
plugin = "pretrain"
inputs = {{ tokens = "tokenize.tokens", tokenizer = "file://{tok}" }}
resources = {{ cpus = 1 }}
params = {{ seq_len = 64, threads = 1, micro_batch = 2, steps = 2, lr = 1e-3, model = {{ vocab_size = 32000, hidden_size = 64, intermediate_size = 128, num_hidden_layers = 2, num_attention_heads = 4, num_key_value_heads = 2, max_position_embeddings = 2048 }} }}

[stages.chat_model]
plugin = "sft"
inputs = {{ model = "pretrain.model", germandpr = "file://{sft}" }}
resources = {{ cpus = 1 }}
params = {{ datasets = [{{ input = "germandpr", weight = 0.02 }}], seq_len = 512, steps = 2, micro_batch = 2, lr = 1e-3, threads = 1 }}

[stages.judge_model]
plugin = "sft"
inputs = {{ model = "pretrain.model", verdicts = "file://${{workflow.dir}}/verdicts.jsonl" }}
resources = {{ cpus = 2 }}
params = {{ datasets = [{{ input = "verdicts" }}], loss_on = "assistant", seq_len = 2048, steps = 80, micro_batch = 1, lr = 1e-2, min_lr = 1e-2, warmup_steps = 0, weight_decay = 0.0, threads = 2, validation_fraction = 0.0 }}
"#,
        tok = data.join("llama2-tokenizer/tokenizer.json").display(),
        sft = data.join("demo/sft/germandpr-instruct.jsonl").display(),
    )
}

/// Copies an artifact (a folder) out of the sandbox's store into `to`, byte for byte.
fn materialise(sb: &Sandbox, digest: &str, to: &Path) {
    let store = sb.store_root();
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(store.join(format!("manifests/sha256/{hex}.json"))).expect("manifest"),
    )
    .expect("manifest JSON");
    for f in manifest["files"].as_array().expect("files") {
        let sha = f["sha256"].as_str().expect("sha256");
        let dst = to.join(f["path"].as_str().expect("path"));
        std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
        std::fs::copy(
            store.join(format!("blobs/sha256/{}/{sha}", &sha[..2])),
            &dst,
        )
        .expect("copy blob");
    }
}

/// The only file of a single-file artifact.
fn artifact_text(sb: &Sandbox, digest: &str) -> String {
    let files = artifact_files(sb, digest);
    let files = files.as_object().expect("files");
    assert_eq!(files.len(), 1, "{:?}", files.keys());
    files
        .values()
        .next()
        .and_then(Value::as_str)
        .expect("text")
        .to_string()
}

/// `leo-torch serve` on a checkpoint as model `judge`, requiring the key; its output in `log`.
struct Judge {
    child: Child,
    log: PathBuf,
}

impl Judge {
    fn start(model: &Path, log: PathBuf) -> (Judge, String) {
        let leo_torch = leo_bin().with_file_name("leo-torch");
        let out = std::fs::File::create(&log).expect("server log");
        let child = Command::new(&leo_torch)
            .args(["serve", &model.display().to_string(), "--port", "0"])
            .args(["--model-name", "judge", "--api-key-env", "JUDGE_API_KEY"])
            .env("JUDGE_API_KEY", KEY)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} serve: {e}", leo_torch.display()));
        let judge = Judge { child, log };
        let mut url = String::new();
        wait_until(
            "the judge server to listen",
            Duration::from_secs(120),
            || {
                let text = judge.text();
                match text.lines().find_map(|l| l.split("listening on ").nth(1)) {
                    Some(u) => {
                        url = u.trim().to_string();
                        true
                    }
                    None => false,
                }
            },
        );
        (judge, format!("{url}/v1"))
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `prompt_sha256` of every completion the server logged, in order.
    fn prompts(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains("chat completion id="))
            .map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("prompt_sha256="))
                    .unwrap_or_else(|| panic!("no prompt_sha256 in {l}"))
                    .to_string()
            })
            .collect()
    }
}

impl Drop for Judge {
    fn drop(&mut self) {
        sigkill(&mut self.child);
    }
}

/// Files under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

/// The first 16 hex digits of SHA-256, as `leo serve` logs `prompt_sha256`.
fn hex16(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[test]
fn a_killed_mtbench_stage_resumes_without_asking_the_judge_again() {
    let data = shared_data();
    let Some(sb) = Sandbox::local_pass_only() else {
        return;
    };
    let models = models_workflow(&sb, &data);
    sb.write("models.toml", &models);
    sb.leo_ok(&["run", "models.toml"]);
    let status = sb.status(None);
    let judge_dir = tempfile::tempdir().expect("tempdir");
    let judge_model = judge_dir.path().join("model");
    materialise(
        &sb,
        &output_digest(&status, "judge_model", "model"),
        &judge_model,
    );
    // The server's log lives outside the sandbox: only the run's own files are searched for
    // the key below.
    let (judge, url) = Judge::start(&judge_model, judge_dir.path().join("serve.log"));

    // 10 writing questions (single-v1 prompts) and 10 math questions (single-math-v1, with
    // references): 40 verdicts.
    let mt = data.join("mt-bench-de");
    sb.write(
        "mtbench.toml",
        format!(
            r#"{models}
[stages.mtbench]
plugin = "mtbench"
inputs = {{ model = "chat_model.model", questions = "file://{q}", judge_prompts = "file://{p}" }}
env = {{ JUDGE_API_KEY = "${{secret.JUDGE_API_KEY}}" }}
resources = {{ cpus = 1 }}
params = {{ categories = ["writing", "math"], limit = 20, max_new_tokens = 16, threads = 1, judge = {{ base_url = "{url}", model = "judge", api_key_env = "JUDGE_API_KEY", max_tokens = 24, max_retries = 2 }} }}
"#,
            q = mt.join("questions_de.json").display(),
            p = mt.join("judge_prompts_de.json").display(),
        ),
    );
    let mut engine = sb
        .cmd(&["run", "mtbench.toml"])
        .env("JUDGE_API_KEY", KEY)
        .stdout(std::fs::File::create(sb.path().join("run.stdout")).expect("log"))
        .stderr(std::fs::File::create(sb.path().join("run.stderr")).expect("log"))
        .spawn()
        .expect("leo run");
    wait_until(
        "the judge's third verdict",
        Duration::from_secs(600),
        || judge.prompts().len() >= 3,
    );
    sigkill(&mut engine);
    let run = sb.latest_run();
    let killed = sb.status(Some(&run));
    assert_ne!(
        stage(&killed, "mtbench")["status"],
        "succeeded",
        "the stage finished before the kill: {killed}"
    );

    let out = sb
        .cmd(&["resume", &run])
        .env("JUDGE_API_KEY", KEY)
        .output()
        .expect("leo resume");
    assert!(
        out.status.success(),
        "leo resume failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = sb.status(Some(&run));
    assert_eq!(status["run"]["status"], "succeeded", "{status}");
    assert_eq!(stage(&status, "mtbench")["attempts"], 2, "{status}");

    // What the resumed attempt started with: k verdicts, the first k the judge was asked (the
    // stage asks in question order, turn 1 before turn 2).
    let log = sb.leo_ok(&["logs", &run, "mtbench"]);
    let line = log
        .lines()
        .find_map(|l| l.split_once("resuming with ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("the second attempt did not resume from a checkpoint:\n{log}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let (answers, stored): (usize, usize) = (
        words[0].parse().expect("answers"),
        words[3].parse().expect("verdicts"),
    );
    assert_eq!(answers, 20, "{line}");
    assert!(stored >= 2, "{line}");
    let asked = judge.prompts();
    assert!(
        asked.len() >= 40 && asked.len() <= 42,
        "40 verdicts, at most the one or two in flight at the kill asked twice; the judge was asked {}",
        asked.len()
    );
    // The checkpoint's verdicts, as the judge server hashes their prompts (its chat template,
    // the sft stage's ChatML, rendered with the generation prompt).
    let checkpoint = words.last().expect("checkpoint digest");
    let files = artifact_files(&sb, checkpoint);
    let stored_prompts: Vec<String> = files
        .as_object()
        .expect("files")
        .iter()
        .filter(|(path, _)| path.starts_with("judgements/"))
        .map(|(_, text)| {
            let record: Value = serde_json::from_str(text.as_str().expect("text")).expect("record");
            let mut rendered = String::new();
            for m in record["messages"].as_array().expect("messages") {
                rendered.push_str(&format!(
                    "<|im_start|>{}\n{}<|im_end|>\n",
                    m["role"].as_str().expect("role"),
                    m["content"].as_str().expect("content")
                ));
            }
            rendered.push_str("<|im_start|>assistant\n");
            hex16(&rendered)
        })
        .collect();
    assert_eq!(stored_prompts.len(), stored);
    // Stored before the kill: the first k prompts the judge was asked (the stage asks in
    // question order, turn 1 before turn 2, and stores each verdict before the next request).
    let (first, resumed) = (&asked[..stored], &asked[asked.len() - (40 - stored)..]);
    let mut a = first.to_vec();
    let mut b = stored_prompts.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the checkpoint holds the verdicts asked for first");
    for p in resumed {
        assert!(
            !stored_prompts.contains(p),
            "the resumed attempt asked again for prompt {p}, stored before the kill"
        );
    }
    let mut distinct: Vec<&String> = first.iter().chain(resumed).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 40, "every verdict is asked for once");
    assert!(
        log.contains(&format!(
            "{} verdict(s) asked for, {stored} reused",
            40 - stored
        )),
        "{log}"
    );

    // Every verdict made and parsed; the report is what they say.
    let judgements: Vec<Value> =
        artifact_text(&sb, &output_digest(&status, "mtbench", "judgements"))
            .lines()
            .map(|l| serde_json::from_str(l).expect("judgement JSON"))
            .collect();
    assert_eq!(judgements.len(), 40);
    let score = |j: &Value| j["score"].as_f64().expect("score");
    let unparsed = judgements.iter().filter(|j| score(j) == -1.0).count();
    let verdicts: Vec<&str> = judgements
        .iter()
        .map(|j| j["judgment"].as_str().expect("judgment"))
        .collect();
    assert_eq!(
        unparsed, 0,
        "the judge model answers verdicts: {verdicts:?}"
    );
    let math_prompts = judgements
        .iter()
        .filter(|j| j["category"] == "math")
        .map(|j| j["judge_prompt"].as_str().expect("prompt name"))
        .collect::<Vec<_>>();
    assert!(
        math_prompts.iter().all(|p| p.starts_with("single-math-v1")) && math_prompts.len() == 20,
        "{math_prompts:?}"
    );
    let report: Value = serde_json::from_str(&artifact_text(
        &sb,
        &output_digest(&status, "mtbench", "report"),
    ))
    .expect("report JSON");
    let scores = |f: &dyn Fn(&Value) -> bool| -> Vec<f64> {
        judgements.iter().filter(|j| f(j)).map(score).collect()
    };
    let close = |a: &Value, b: f64| (a.as_f64().expect("number") - b).abs() < 1e-9;
    assert!(
        close(&report["average"], mean(&scores(&|_| true))),
        "{report}"
    );
    assert!(
        close(&report["first_turn"], mean(&scores(&|j| j["turn"] == 1))),
        "{report}"
    );
    assert!(
        close(&report["second_turn"], mean(&scores(&|j| j["turn"] == 2))),
        "{report}"
    );
    for c in ["writing", "math"] {
        assert!(
            close(
                &report["per_category"][c]["average"],
                mean(&scores(&|j| j["category"] == c))
            ),
            "{report}"
        );
    }
    assert_eq!(report["counts"]["judged"], 40);
    assert_eq!(report["counts"]["unparsed"], 0);
    assert_eq!(report["judge"]["base_url"], url);
    let metrics = &stage(&status, "mtbench")["metrics"];
    assert!(
        close(
            &metrics["mtbench/average"],
            report["average"].as_f64().expect("average")
        ),
        "{metrics}"
    );
    assert!(metrics["mtbench/math"].as_f64().is_some(), "{metrics}");
    eprintln!("report: {report}");

    // The key reached the judge and nothing else: no file of the run (state database, store,
    // attempt folders, logs) holds it, and the stage never printed it (leo would have masked it
    // as *** in the log).
    assert!(
        !log.contains("***"),
        "the stage printed its key (masked by leo):\n{log}"
    );
    let hits = files_containing(sb.path(), KEY);
    assert!(hits.is_empty(), "files hold the judge's key: {hits:?}");
}
