//! Helpers for end-to-end tests: a sandbox folder, the `leo` binary, and waiting for
//! conditions (polling a condition with a deadline, never a bare sleep).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `leo` binary of this build: `target/<profile>/leo`, beside the test's `deps/` folder.
pub fn leo_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LEO_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("leo");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (cargo build)",
        bin.display()
    );
    bin
}

/// Repository root (for fixtures).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// A folder to run `leo` in. With `LEO_TEST_STORAGE=team` in the environment, its state lives
/// in a fresh database of a throwaway PostgreSQL cluster instead of `.leo/state.db`, and its
/// artifacts on a throwaway S3 server instead of `.leo/store` (`just test` runs the end-to-end
/// tests both ways).
pub struct Sandbox {
    /// Dropped before `dir` (fields drop in order): the servers stop, then their files go.
    postgres: Option<(leo_testkit::Postgres, String)>,
    s3: Option<leo_testkit::S3Server>,
    pub dir: tempfile::TempDir,
}

/// Whether the end-to-end tests run on team storage (`LEO_TEST_STORAGE=team`): PostgreSQL
/// state and an S3 artifact store.
pub fn team_storage() -> bool {
    std::env::var("LEO_TEST_STORAGE").is_ok_and(|v| v == "team")
}

/// The prefix of the sandbox's store in the S3 bucket.
const S3_PREFIX: &str = "store";

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox::with_storage(team_storage())
    }

    /// A sandbox on local storage (SQLite + a store folder) whatever `LEO_TEST_STORAGE` says.
    pub fn local() -> Sandbox {
        Sandbox::with_storage(false)
    }

    /// A sandbox on local storage for a test in which storage plays no part, or `None` in the
    /// team pass (`LEO_TEST_STORAGE=team`), where it would repeat the local pass exactly: `just
    /// test` runs both passes, so the test still runs once.
    pub fn local_pass_only() -> Option<Sandbox> {
        if team_storage() {
            eprintln!("storage plays no part in this test: it runs in the local pass");
            return None;
        }
        Some(Sandbox::local())
    }

    /// A sandbox on team storage for a test of what only teams do (a cluster's executor), or
    /// `None` in the local pass: `just test` runs both passes, so the test still runs once.
    pub fn team_pass_only() -> Option<Sandbox> {
        if !team_storage() {
            eprintln!("this test runs in the team pass (LEO_TEST_STORAGE=team)");
            return None;
        }
        Some(Sandbox::team())
    }

    /// A sandbox on team storage (PostgreSQL + S3) whatever `LEO_TEST_STORAGE` says.
    pub fn team() -> Sandbox {
        Sandbox::with_storage(true)
    }

    fn with_storage(team: bool) -> Sandbox {
        let postgres = team.then(|| {
            let pg = leo_testkit::Postgres::start().expect("a PostgreSQL cluster for the test");
            let url = pg.database().expect("a database");
            (pg, url)
        });
        let s3 = team.then(|| leo_testkit::S3Server::start().expect("an S3 server for the test"));
        Sandbox {
            postgres,
            s3,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Where the store's objects lie on disk (`manifests/`, `blobs/`): `.leo/store`, or the S3
    /// server's folder for the sandbox's prefix.
    pub fn store_root(&self) -> PathBuf {
        match &self.s3 {
            Some(s3) => s3.bucket_dir().join(S3_PREFIX),
            None => self.path().join(".leo/store"),
        }
    }

    /// Every row of the sandbox's PostgreSQL state, as text (team storage only).
    pub fn dump_state(&self) -> Option<String> {
        self.postgres
            .as_ref()
            .map(|(pg, url)| pg.dump(url).expect("pg_dump of the state"))
    }

    /// The S3 server, on team storage.
    pub fn s3(&self) -> Option<&leo_testkit::S3Server> {
        self.s3.as_ref()
    }

    /// The PostgreSQL URL of this sandbox's state, when it runs on PostgreSQL.
    pub fn state_url(&self) -> Option<&str> {
        self.postgres.as_ref().map(|(_, url)| url.as_str())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, content).expect("write");
        p
    }

    /// A `leo` command running in the sandbox, with fast retries.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(leo_bin());
        c.args(args)
            .current_dir(self.path())
            .env_remove("LEO_STATE_URL")
            .env_remove("LEO_STORE_URL")
            .env("LEO_RETRY_DELAY", "0.05")
            .stdin(Stdio::null());
        if let Some(url) = self.state_url() {
            c.env("LEO_STATE_URL", url);
        }
        if let Some(s3) = &self.s3 {
            c.env("LEO_STORE_URL", s3.url(S3_PREFIX));
            c.envs(s3.env());
        }
        c
    }

    pub fn leo(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run leo")
    }

    /// Runs leo, asserting success, and returns stdout.
    pub fn leo_ok(&self, args: &[&str]) -> String {
        succeeded(args, self.leo(args))
    }

    pub fn leo_json(&self, args: &[&str]) -> Value {
        let text = self.leo_ok(args);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("leo {args:?}: not JSON ({e}): {text}"))
    }

    /// Starts leo in the background (stdout/stderr to files in the sandbox).
    pub fn spawn(&self, args: &[&str], log_name: &str) -> Child {
        let out =
            std::fs::File::create(self.path().join(format!("{log_name}.stdout"))).expect("log");
        let err =
            std::fs::File::create(self.path().join(format!("{log_name}.stderr"))).expect("log");
        self.cmd(args)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn leo")
    }

    /// `leo status --json` of a run (default: latest).
    pub fn status(&self, run: Option<&str>) -> Value {
        match run {
            Some(r) => self.leo_json(&["status", r, "--json"]),
            None => self.leo_json(&["status", "--json"]),
        }
    }

    /// The only (or latest) run id.
    pub fn latest_run(&self) -> String {
        let runs = self.leo_json(&["list", "--json"]);
        runs[0]["id"].as_str().expect("a run").to_string()
    }
}

/// The stdout of a finished `leo ARGS`, asserting it succeeded (stdout and stderr in the message).
pub fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "leo {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The stage entry of a `leo status --json` document.
/// The digest of a stage's output in a `leo status --json`.
pub fn output_digest(status: &Value, stage_name: &str, output: &str) -> String {
    stage(status, stage_name)["outputs"][output]
        .as_str()
        .unwrap_or_else(|| panic!("stage {stage_name} has no output {output}"))
        .to_string()
}

pub fn stage<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no stage {name} in {status}"))
}

pub fn sigkill(child: &mut Child) {
    // SAFETY: signalling a child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

pub fn sigterm(child: &Child) {
    // SAFETY: signalling a child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

/// The artifact digests of every stage's outputs: `{stage: {output: digest}}`.
pub fn output_digests(status: &Value) -> Value {
    let mut map = serde_json::Map::new();
    for s in status["stages"].as_array().expect("stages") {
        map.insert(
            s["name"].as_str().unwrap_or("?").to_string(),
            s["outputs"].clone(),
        );
    }
    Value::Object(map)
}

/// The diamond `a -> (b, c) -> d` of shell stages.
///
/// - `rendezvous`: b and c each wait (up to 60 s) until the other has started, so the run can
///   only succeed when they overlap;
/// - `gate`: b signals `b-started` in the sandbox and waits for a `go` file (for kill tests);
/// - `n`: a param of `a`; changing it changes every output downstream.
pub fn diamond(sb: &Sandbox, n: u32, rendezvous: bool, gate: bool) -> PathBuf {
    let dir = sb.path().display().to_string();
    let wait_for = |me: &str, other: &str| {
        format!(
            "touch {dir}/{me}-started; i=0; until [ -f {dir}/{other}-started ]; do i=$((i+1)); \
             [ $i -gt 6000 ] && exit 9; sleep 0.01; done; "
        )
    };
    let (b_pre, c_pre) = if rendezvous {
        (wait_for("b", "c"), wait_for("c", "b"))
    } else if gate {
        (
            format!(
                "touch {dir}/b-started; i=0; until [ -f {dir}/go ]; do i=$((i+1)); [ $i -gt 6000 ] && exit 9; sleep 0.01; done; "
            ),
            String::new(),
        )
    } else {
        (String::new(), String::new())
    };
    let text = format!(
        r#"[workflow]
name = "diamond"

[vars]
n = {n}

[stages.a]
plugin = "shell"
params = {{ run = "seq 1 ${{vars.n}} > $LEO_OUTPUT_NUMBERS/n.txt", outputs = ["numbers"] }}

[stages.b]
plugin = "shell"
inputs = {{ nums = "a.numbers" }}
params = {{ run = "{b_pre}awk '{{s+=$1}} END {{print s}}' $LEO_INPUT_NUMS/n.txt > $LEO_OUTPUT_SUM/sum.txt", outputs = ["sum"] }}

[stages.c]
plugin = "shell"
inputs = {{ nums = "a.numbers" }}
params = {{ run = "{c_pre}wc -l < $LEO_INPUT_NUMS/n.txt | tr -d ' ' > $LEO_OUTPUT_COUNT/count.txt", outputs = ["count"] }}

[stages.d]
plugin = "shell"
inputs = {{ sum = "b.sum", count = "c.count" }}
params = {{ run = "echo \"mean = $(cat $LEO_INPUT_SUM/sum.txt) / $(cat $LEO_INPUT_COUNT/count.txt)\" > $LEO_OUTPUT_REPORT/report.txt", outputs = ["report"] }}
"#
    );
    sb.write("diamond.toml", text)
}

/// Attempt counts per stage from `leo status --json`.
pub fn attempt_counts(status: &Value) -> Vec<(String, i64)> {
    status["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("?").to_string(),
                s["attempts"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        })
        .unwrap_or(false)
}

/// (started_at, finished_at) of a stage's first attempt, from `leo status --json`.
pub fn first_attempt_span(status: &Value, name: &str) -> (i64, i64) {
    let a = &stage(status, name)["attempt_list"][0];
    (
        a["started_at"].as_i64().expect("started_at"),
        a["finished_at"].as_i64().expect("finished_at"),
    )
}

/// Live (non-zombie) processes whose environment says they belong to run `run_id`
/// (`LEO_RUN_ID`, which every attempt's processes carry), as pids.
pub fn processes_of_run(run_id: &str) -> Vec<String> {
    let marker = format!("LEO_RUN_ID={run_id}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
                .unwrap_or(false)
        })
        .filter(|pid| alive(pid))
        .collect()
}

/// The files of an artifact read back out of the sandbox's store, as `{path: text}`.
pub fn artifact_files(sb: &Sandbox, digest: &str) -> Value {
    let store = sb.store_root();
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let manifest_path = store.join(format!("manifests/sha256/{hex}.json"));
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .unwrap_or_else(|e| panic!("manifest {}: {e}", manifest_path.display())),
    )
    .expect("manifest JSON");
    let mut out = serde_json::Map::new();
    for f in manifest["files"].as_array().expect("files") {
        let sha = f["sha256"].as_str().expect("sha256");
        let bytes =
            std::fs::read(store.join(format!("blobs/sha256/{}/{sha}", &sha[..2]))).expect("blob");
        out.insert(
            f["path"].as_str().expect("path").to_string(),
            Value::String(String::from_utf8_lossy(&bytes).into()),
        );
    }
    Value::Object(out)
}

/// `../shared/data`, which the training tests read (German passages, the Llama-2 tokenizer).
pub fn shared_data() -> PathBuf {
    let root = repo_root().join("../shared/data");
    assert!(
        root.join("demo/de/germandpr-passages.txt").exists()
            && root.join("llama2-tokenizer/tokenizer.json").exists(),
        "this test needs ../shared/data (demo/de, llama2-tokenizer) beside the repository"
    );
    root
}

/// `train.toml`: tokenize -> pretrain over the first 80 German passages, a tiny Llama (2
/// layers, hidden 64). `params` are added to the pretrain stage's (TOML inline-table entries),
/// `resources` are its resources, and `pretrain_lines` go into its table as they are (e.g.
/// `executor = "slurm"`).
pub fn training_workflow(sb: &Sandbox, params: &str, resources: &str, pretrain_lines: &str) {
    let data = shared_data();
    let leo_torch = leo_bin().with_file_name("leo-torch");
    assert!(
        leo_torch.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        leo_torch.display()
    );
    let passages =
        std::fs::read_to_string(data.join("demo/de/germandpr-passages.txt")).expect("passages");
    let docs: String = passages
        .lines()
        .take(80)
        .enumerate()
        .map(|(i, l)| format!("{}\n", serde_json::json!({"id": i.to_string(), "text": l})))
        .collect();
    sb.write("docs.jsonl", docs);
    let tokenizer = data.join("llama2-tokenizer/tokenizer.json");
    sb.write(
        "train.toml",
        format!(
            r#"
[workflow]
name = "train"

[stages.tokenize]
plugin = "tokenize"
inputs = {{ documents = "file://${{workflow.dir}}/docs.jsonl", tokenizer = "file://{tok}" }}
params = {{ validation_fraction = 0.1, seed = 1 }}

[stages.pretrain]
plugin = "pretrain"
{pretrain_lines}
inputs = {{ tokens = "tokenize.tokens", tokenizer = "file://{tok}" }}
resources = {{ {resources} }}
params = {{ seq_len = 64, threads = 1, {params}, model = {{ vocab_size = 32000, hidden_size = 64, intermediate_size = 128, num_hidden_layers = 2, num_attention_heads = 4, num_key_value_heads = 2, max_position_embeddings = 128 }} }}
"#,
            tok = tokenizer.display()
        ),
    );
}

/// Every step's loss of the pretrain stage, the latest attempt's value where attempts
/// overlap (`leo metrics` CSV: stage,attempt,step,name,value,time_ms).
pub fn pretrain_losses(sb: &Sandbox, run: &str) -> std::collections::BTreeMap<u64, String> {
    let csv = sb.leo_ok(&["metrics", run, "--stage", "pretrain"]);
    let mut out = std::collections::BTreeMap::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() >= 5 && f[3] == "loss" {
            out.insert(f[2].parse().expect("step"), f[4].to_string());
        }
    }
    out
}
