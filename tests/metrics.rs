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
