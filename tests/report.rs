//! The run report: the `report` stage and `leo report RUN` render the same data (one run
//! context, one renderer), and a run with a failed stage still gets its report.

use leo_e2e::*;
use serde_json::Value;

/// `prep` (an external input) -> `train` (a stepped `loss`, a `val_loss`) -> `eval`
/// (`x_de/acc`, `x_en/acc`) -> `report`. `eval_fails` makes `eval` fail instead.
fn workflow(sb: &Sandbox, eval_fails: bool) {
    sb.write("raw.txt", "some text\n");
    sb.write(
        "train.sh",
        "for s in 1 2 3 4 5 6; do\n\
         echo \"{\\\"event\\\":\\\"metric\\\",\\\"step\\\":$s,\\\"name\\\":\\\"loss\\\",\\\"value\\\":$((10 - s)).5}\"\n\
         done\n\
         echo '{\"event\":\"metric\",\"step\":6,\"name\":\"val_loss\",\"value\":4.25}'\n\
         echo weights > \"$LEO_OUTPUT_MODEL/model.txt\"\n",
    );
    let eval = if eval_fails {
        "echo 'the judge said boom' >&2; exit 3\n"
    } else {
        "echo '{\"event\":\"metric\",\"name\":\"x_de/acc\",\"value\":0.3125}'\n\
         echo '{\"event\":\"metric\",\"name\":\"x_en/acc\",\"value\":0.6875}'\n\
         echo done > \"$LEO_OUTPUT_RESULTS/results.json\"\n"
    };
    sb.write("eval.sh", eval);
    let dir = sb.path().display();
    sb.write(
        "report.toml",
        format!(
            r#"[workflow]
name = "report-e2e"

[stages.prep]
plugin = "shell"
inputs = {{ raw = "file://${{workflow.dir}}/raw.txt" }}
params = {{ run = "cp $LEO_INPUT_RAW $LEO_OUTPUT_DATA/raw.txt", outputs = ["data"] }}

[stages.train]
plugin = "shell"
inputs = {{ data = "prep.data" }}
params = {{ run = "sh {dir}/train.sh", outputs = ["model"] }}

[stages.eval]
plugin = "shell"
inputs = {{ model = "train.model" }}
params = {{ run = "sh {dir}/eval.sh", outputs = ["results"] }}

[stages.report]
plugin = "report"
inputs = {{ results = "eval.results" }}
"#
        ),
    );
}

/// `leo report RUN --out FILE`: the page and its data (`FILE` with `.json`).
fn leo_report(sb: &Sandbox, run: &str, name: &str) -> (String, Value) {
    let out = sb.path().join(name);
    let printed = sb.leo_ok(&["report", run, "--out", &out.display().to_string()]);
    assert_eq!(printed.trim(), out.display().to_string());
    let html = std::fs::read_to_string(&out).expect("the report page");
    let json = std::fs::read(out.with_extension("json")).expect("the report data");
    (html, serde_json::from_slice(&json).expect("report JSON"))
}

/// The part of a page between `start` and the next `end`.
fn section<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let at = html
        .find(start)
        .unwrap_or_else(|| panic!("no `{start}` in the page"));
    let rest = &html[at..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

fn assert_page(html: &str, stages: &[&str], uri: &str) {
    let loss = section(
        html,
        "<figure class=\"chart loss\" data-stage=\"train\">",
        "</figure>",
    );
    assert!(
        loss.contains("<svg") && loss.contains("<polyline"),
        "{loss}"
    );
    assert!(loss.contains("val_loss"), "{loss}");
    let evals = section(html, "<table class=\"evals\">", "</table>");
    for value in ["0.3125", "0.6875"] {
        assert!(evals.contains(value), "{value} in {evals}");
    }
    let pair = section(html, "<figure class=\"chart pair\"", "</figure>");
    assert!(
        pair.contains("x_de vs x_en: acc (higher is better)"),
        "{pair}"
    );
    let lineage = section(html, "<svg class=\"lineage\"", "</svg>");
    for s in stages {
        assert!(
            lineage.contains(&format!("class=\"label\">{s}</text>"))
                && lineage.contains(&format!("<title>stage {s}\n")),
            "stage {s} in the lineage:\n{lineage}"
        );
    }
    assert!(lineage.contains(uri), "{uri} in the lineage:\n{lineage}");
}

#[test]
fn the_report_stage_and_leo_report_render_the_same_run() {
    let sb = Sandbox::new();
    workflow(&sb, false);
    sb.leo_ok(&["run", "report.toml"]);
    let run = sb.latest_run();
    let status = sb.status(Some(&run));
    let files = artifact_files(&sb, &output_digest(&status, "report", "report"));
    let stage_html = files["report.html"]
        .as_str()
        .expect("report.html in the output");
    let stage_data: Value =
        serde_json::from_str(files["report.json"].as_str().expect("report.json")).expect("JSON");

    // A unique prefix of the run id is enough.
    let (cli_html, cli_data) = leo_report(&sb, &run[..run.len() - 2], "r.html");
    let uri = cli_data["stages"]["prep"]["inputs"]["raw"]["uri"]
        .as_str()
        .expect("the external input's URI")
        .to_string();
    assert!(
        uri.starts_with("file://") && uri.ends_with("/raw.txt"),
        "{uri}"
    );

    // The stage reports what is upstream of it; leo report every stage, itself included.
    assert_page(stage_html, &["prep", "train", "eval"], &uri);
    assert_page(&cli_html, &["prep", "train", "eval", "report"], &uri);
    assert!(!stage_html.contains("<title>stage report\n"));
    assert_eq!(cli_data["stages"]["report"]["status"], "succeeded");

    // One data model: the upstream stages, their metrics, evals and pairs agree exactly.
    assert_eq!(stage_data["run"]["id"], run.as_str());
    assert_eq!(stage_data["run"]["status"], "running");
    assert_eq!(cli_data["run"]["status"], "succeeded");
    for key in ["training", "evals", "pairs"] {
        assert_eq!(stage_data[key], cli_data[key], "{key}");
    }
    for s in ["prep", "train", "eval"] {
        assert_eq!(stage_data["stages"][s], cli_data["stages"][s], "stage {s}");
    }
    let losses: Vec<f64> = cli_data["stages"]["train"]["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .filter(|m| m["name"] == "loss")
        .map(|m| m["value"].as_f64().expect("value"))
        .collect();
    assert_eq!(losses, [9.5, 8.5, 7.5, 6.5, 5.5, 4.5]);
    assert_eq!(
        stage_data["evals"],
        serde_json::json!([
            {"stage": "eval", "task": "x_de", "metric": "acc", "value": 0.3125, "stderr": null, "lower_is_better": false},
            {"stage": "eval", "task": "x_en", "metric": "acc", "value": 0.6875, "stderr": null, "lower_is_better": false},
        ])
    );

    // Run again: everything is cached, and the report still shows the curves of the attempt
    // that made the model.
    sb.leo_ok(&["run", "report.toml"]);
    let again = sb.latest_run();
    assert_ne!(again, run);
    let printed = sb.leo_ok(&["report", "latest"]);
    let default_path = sb.path().join(".leo/reports").join(format!("{again}.html"));
    assert!(
        printed
            .trim()
            .ends_with(&format!(".leo/reports/{again}.html")),
        "{printed}"
    );
    let cached: Value = serde_json::from_slice(
        &std::fs::read(default_path.with_extension("json")).expect("the default report data"),
    )
    .expect("JSON");
    let train = &cached["stages"]["train"];
    assert_eq!(train["status"], "cached");
    assert_eq!(train["cached_from_run"], run.as_str());
    assert_eq!(train["produced_by"]["run"], run.as_str());
    assert_eq!(train["metrics"], cli_data["stages"]["train"]["metrics"]);
    assert_eq!(cached["evals"], cli_data["evals"]);
    let page = std::fs::read_to_string(&default_path).expect("the default report page");
    assert!(
        page.contains(&format!("cached from run {run}")),
        "cached in the stage table"
    );
}

#[test]
fn a_run_with_a_failed_stage_still_gets_its_report() {
    let sb = Sandbox::new();
    workflow(&sb, true);
    let out = sb.leo(&["run", "report.toml"]);
    assert!(!out.status.success(), "the eval stage fails the run");
    let run = sb.latest_run();
    let (html, data) = leo_report(&sb, &run, "failed.html");
    assert_eq!(data["run"]["status"], "failed");
    assert_eq!(data["stages"]["eval"]["status"], "failed");
    assert_eq!(data["stages"]["report"]["status"], "skipped");
    let stages = section(&html, "<table class=\"stages\">", "</table>");
    let eval_row = section(stages, "<tr><td>eval</td>", "</tr>");
    assert!(eval_row.contains("status-failed"), "{eval_row}");
    assert!(eval_row.contains("the judge said boom"), "{eval_row}");
    let report_row = section(stages, "<tr><td>report</td>", "</tr>");
    assert!(
        report_row.contains("skipped") && report_row.contains("did not run"),
        "{report_row}"
    );
    // What did run is still there: the training curve.
    assert!(html.contains("<figure class=\"chart loss\" data-stage=\"train\"><svg"));
    assert!(data["evals"].as_array().expect("evals").is_empty());
}
