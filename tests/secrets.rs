//! Credentials planted in leo's environment and referenced from the workflow reach the stage
//! that needs them and nothing else: no table, log, lineage record or artifact (team storage:
//! PostgreSQL state and an S3 store, both scanned byte for byte afterwards).

use std::path::Path;

use leo_e2e::{output_digest, stage, Sandbox};

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

#[test]
fn planted_credentials_reach_no_table_log_lineage_or_artifact() {
    let sb = Sandbox::team();
    let judge = "judge-sk-9f8e7d6c5b4a"; // referenced as ${secret.JUDGE_ACCESS}
    let planted = "tok-planted-1a2b3c4d5e"; // in leo's environment, name says token
    let dir = sb.path().display().to_string();
    let workflow = format!(
        r#"[workflow]
name = "secrets"

[stages.a]
plugin = "shell"
retries = 1
env = {{ JUDGE = "${{secret.JUDGE_ACCESS}}" }}
params = {{ outputs = ["out"], run = """
echo "judge=$JUDGE"
echo "planted=$LEO_E2E_PLANTED_TOKEN" >&2
env | grep AWS_SECRET_ACCESS_KEY
echo '{{"event": "log", "message": "calling the judge with '$JUDGE'"}}'
if [ ! -f {dir}/second ]; then touch {dir}/second; exit 3; fi
echo "score 7" > $LEO_OUTPUT_OUT/score.txt
""" }}

[stages.b]
plugin = "shell"
inputs = {{ score = "a.out" }}
params = {{ outputs = ["report"], run = "cp $LEO_INPUT_SCORE/score.txt $LEO_OUTPUT_REPORT/" }}
"#
    );
    sb.write("secrets.toml", workflow);
    let out = sb
        .cmd(&["run", "secrets.toml"])
        .env("JUDGE_ACCESS", judge)
        .env("LEO_E2E_PLANTED_TOKEN", planted)
        .output()
        .expect("leo run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    // The stage saw the secret (its first attempt failed on purpose; its log tail is masked).
    let status = sb.status(None);
    assert_eq!(stage(&status, "a")["attempts"], 2);
    let run_id = status["run"]["id"].as_str().expect("run id").to_string();
    let log = sb.leo_ok(&["logs", &run_id, "a"]);
    assert!(log.contains("judge=***"), "{log}");
    assert!(log.contains("planted=***"), "{log}");
    assert!(log.contains("AWS_SECRET_ACCESS_KEY=***"), "{log}");
    let report = output_digest(&status, "b", "report");
    let lineage = sb.leo_ok(&["lineage", &report, "--json"]);

    let s3_secret = sb.s3().expect("team storage").secret_key().to_string();
    let dump = sb.dump_state().expect("team storage");
    assert!(
        dump.contains("exited with code 3"),
        "the failure was not recorded"
    );
    for secret in [judge, planted, s3_secret.as_str()] {
        assert!(!stderr.contains(secret), "leo printed a secret:\n{stderr}");
        assert!(!log.contains(secret), "a stored log holds a secret");
        assert!(!lineage.contains(secret), "lineage holds a secret");
        assert!(!dump.contains(secret), "the state database holds a secret");
        let in_files = files_containing(sb.path(), secret);
        assert!(in_files.is_empty(), "files hold a secret: {in_files:?}");
        let in_store = files_containing(&sb.s3().expect("s3").bucket_dir(), secret);
        assert!(in_store.is_empty(), "artifacts hold a secret: {in_store:?}");
    }
}
