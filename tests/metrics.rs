//! Metrics as people read them: `leo status` shows each stage's latest values.

use leo_e2e::*;

/// Two stages reporting metrics: `train` (a retry after a failed first attempt) and `eval`.
fn metrics_workflow(sb: &Sandbox) {
    let plugin = repo_root().join("tests/plugins/metrics.py");
    sb.write(
        "metrics.toml",
        format!(
            "[workflow]\nname = \"metrics\"\n\
             [stages.train]\nplugin = \"exec:{0}\"\nretries = 1\nparams = {{ steps = 4, fail_first = true }}\n\
             [stages.eval]\nplugin = \"exec:{0}\"\nparams = {{ steps = 1 }}\n\
             [stages.quiet]\nplugin = \"shell\"\nparams = {{ run = \"true\" }}\n",
            plugin.display()
        ),
    );
}

#[test]
fn status_shows_the_latest_metrics_under_each_stage() {
    let sb = Sandbox::new();
    metrics_workflow(&sb);
    sb.leo_ok(&["run", "metrics.toml"]);
    let text = sb.leo_ok(&["status"]);
    let lines: Vec<&str> = text.lines().collect();
    let under = |stage: &str| -> Option<&str> {
        let i = lines
            .iter()
            .position(|l| l.split_whitespace().next() == Some(stage))
            .unwrap_or_else(|| panic!("no row for {stage} in:\n{text}"));
        lines.get(i + 1).copied().filter(|l| l.starts_with("    "))
    };
    // The retry's values (the failed first attempt's are history), in reporting order, with
    // the step of the latest metric that had one.
    assert_eq!(
        under("train"),
        Some(
            "    loss 2.314  lr 2.0e-05  grad_norm 0.83  tokens_per_s 1523  samples 64  (step 40)"
        ),
        "{text}"
    );
    assert_eq!(
        under("eval"),
        Some("    loss 2.9  lr 2.0e-05  grad_norm 0.83  tokens_per_s 1520  samples 64  (step 10)"),
        "{text}"
    );
    assert_eq!(under("quiet"), None, "{text}");
    // The stage rows themselves keep their layout.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("train ") && l.contains("succeeded") && l.contains(" 2 ")),
        "{text}"
    );
}

/// `leo metrics` CSV rows as (stage, attempt, step, name, value); checks the header and that
/// every time is a plausible millisecond timestamp.
fn csv_rows(text: &str) -> Vec<(String, u32, Option<u64>, String, f64)> {
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("stage,attempt,step,name,value,time_ms"),
        "{text}"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 6, "{l}");
            let time: i64 = f[5]
                .parse()
                .unwrap_or_else(|e| panic!("time_ms in {l}: {e}"));
            assert!(time > 1_600_000_000_000, "{l}");
            (
                f[0].to_string(),
                f[1].parse().expect("attempt"),
                (!f[2].is_empty()).then(|| f[2].parse().expect("step")),
                f[3].to_string(),
                f[4].parse().expect("value"),
            )
        })
        .collect()
}

/// The rows one attempt of the plugin reports for `steps` steps (and `samples` when it ends).
fn reported(
    stage: &str,
    attempt: u32,
    steps: usize,
    ends: bool,
) -> Vec<(String, u32, Option<u64>, String, f64)> {
    let loss = [2.9, 2.6, 2.45, 2.314];
    let mut rows = Vec::new();
    for (i, loss) in loss.into_iter().enumerate().take(steps) {
        let step = Some((i as u64 + 1) * 10);
        for (name, value) in [
            ("loss", loss),
            ("lr", 2.0e-5),
            ("grad_norm", 0.83),
            ("tokens_per_s", 1520.0 + i as f64),
        ] {
            rows.push((stage.to_string(), attempt, step, name.to_string(), value));
        }
    }
    if ends {
        rows.push((
            stage.to_string(),
            attempt,
            None,
            "samples".to_string(),
            64.0,
        ));
    }
    rows
}

#[test]
fn metrics_export_as_csv_with_every_attempt() {
    let sb = Sandbox::new();
    metrics_workflow(&sb);
    sb.leo_ok(&["run", "metrics.toml"]);
    let run = sb.latest_run();

    let all = csv_rows(&sb.leo_ok(&["metrics", &run]));
    let mut want = reported("eval", 1, 1, true);
    want.extend(reported("train", 1, 2, false));
    want.extend(reported("train", 2, 4, true));
    assert_eq!(all, want);

    // One stage, into a file; `latest` names the latest run.
    sb.leo_ok(&[
        "metrics",
        "latest",
        "--stage",
        "train",
        "--out",
        "train.csv",
    ]);
    let text = std::fs::read_to_string(sb.path().join("train.csv")).expect("train.csv");
    assert_eq!(csv_rows(&text), want[5..].to_vec());

    let out = sb.leo(&["metrics", &run, "--stage", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no stage `nope`"), "{err}");
    let out = sb.leo(&["metrics", &run, "--format", "tensorboard"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--out"), "{err}");
}

/// Reads every stage folder under `dir` with TensorBoard's own EventAccumulator.
const READ_EVENTS: &str = r#"
import glob, json, os, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
out = {}
for stage in sorted(os.listdir(sys.argv[1])):
    folder = os.path.join(sys.argv[1], stage)
    acc = EventAccumulator(folder)
    acc.Reload()
    out[stage] = {
        "files": [os.path.basename(f) for f in glob.glob(os.path.join(folder, "*"))],
        "file_version": acc.file_version,
        "scalars": {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]},
    }
print(json.dumps(out))
"#;

#[test]
fn metrics_export_as_tensorboard_event_files() {
    let python = std::env::var_os("LEO_TORCH_PYTHON")
        .expect("LEO_TORCH_PYTHON is not set: run the tests with `just test` (tools/torch-env.sh)");
    let sb = Sandbox::new();
    metrics_workflow(&sb);
    sb.leo_ok(&["run", "metrics.toml"]);
    let run = sb.latest_run();
    let listed = sb.leo_ok(&["metrics", &run, "--format", "tensorboard", "--out", "tb"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");

    let script = sb.write("read_events.py", READ_EVENTS);
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(sb.path().join("tb"))
        .output()
        .expect("run the TensorBoard reader");
    assert!(
        out.status.success(),
        "reading the event files with tensorboard failed (is it in the venv? tools/torch-env.sh \
         installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).expect("reader JSON");
    assert_eq!(read.as_object().map(|o| o.len()), Some(2), "{read}");
    for stage in ["eval", "train"] {
        let s = &read[stage];
        let files = s["files"].as_array().expect("files");
        assert_eq!(files.len(), 1, "{s}");
        assert!(
            files[0]
                .as_str()
                .is_some_and(|f| f.starts_with("events.out.tfevents.")),
            "{s}"
        );
        assert_eq!(s["file_version"], 2.0, "{s}");
    }
    // Every attempt's values, in order, as float32; a metric without a step is at step 0.
    let scalars = |stage: &str, tag: &str| -> Vec<(u64, f64)> {
        read[stage]["scalars"][tag]
            .as_array()
            .unwrap_or_else(|| panic!("no {tag} in {stage}: {read}"))
            .iter()
            .map(|p| (p[0].as_u64().expect("step"), p[1].as_f64().expect("value")))
            .collect()
    };
    let f32s = |v: &[(u64, f64)]| -> Vec<(u64, f64)> {
        v.iter().map(|(s, x)| (*s, f64::from(*x as f32))).collect()
    };
    assert_eq!(
        scalars("train", "loss"),
        f32s(&[
            (10, 2.9),
            (20, 2.6),
            (10, 2.9),
            (20, 2.6),
            (30, 2.45),
            (40, 2.314)
        ])
    );
    assert_eq!(scalars("train", "lr").len(), 6);
    assert_eq!(scalars("train", "samples"), vec![(0, 64.0)]);
    assert_eq!(scalars("eval", "tokens_per_s"), vec![(10, 1520.0)]);
    let tags = read["eval"]["scalars"].as_object().map(|o| o.len());
    assert_eq!(tags, Some(5), "{read}");
}
