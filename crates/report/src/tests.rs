use std::collections::{BTreeMap, BTreeSet};

use leo_plugin::{
    AttemptInfo, AttemptRef, InputInfo, MetricPoint, RunContext, RunInfo, StageContext,
};
use serde_json::json;

use crate::data::english_counterpart;
use crate::lineage::{graph, layout};
use crate::{render_html, ReportData};

fn point(name: &str, step: Option<u64>, value: f64) -> MetricPoint {
    MetricPoint {
        name: name.into(),
        step,
        value,
        attempt: 1,
    }
}

fn stage(needs: &[&str], metrics: Vec<MetricPoint>) -> StageContext {
    StageContext {
        plugin: "shell".into(),
        plugin_version: Some("0.1.0".into()),
        params: json!({"run": "true"}),
        status: "succeeded".into(),
        error: None,
        fingerprint: Some("sha256:ff".into()),
        cached: false,
        cached_from_run: None,
        produced_by: Some(AttemptRef {
            run: "r1".into(),
            stage: "s".into(),
            attempt: 1,
        }),
        attempts: vec![AttemptInfo {
            number: 1,
            status: "succeeded".into(),
            started_at: 1_700_000_000_000,
            finished_at: Some(1_700_000_002_500),
            error: None,
        }],
        needs: needs.iter().map(|s| s.to_string()).collect(),
        inputs: BTreeMap::new(),
        outputs: BTreeMap::new(),
        metrics,
    }
}

fn context(stages: Vec<(&str, StageContext)>) -> RunContext {
    RunContext {
        leo_run_context: 1,
        run: RunInfo {
            id: "20260101-000000-abcdef".into(),
            workflow: "wf".into(),
            status: "succeeded".into(),
            started_at: 1_700_000_000_000,
            ended_at: Some(1_700_000_010_000),
            provenance: Some(
                json!({"leo_version": "0.1.0", "git": {"commit": "abc123", "dirty": true}, "host": "h"}),
            ),
        },
        stages: stages
            .into_iter()
            .map(|(n, s)| (n.to_string(), s))
            .collect(),
    }
}

fn losses(n: u64) -> Vec<MetricPoint> {
    (1..=n)
        .flat_map(|s| {
            [
                point("loss", Some(s), 3.0 / s as f64),
                point("lr", Some(s), 1e-4),
            ]
        })
        .collect()
}

#[test]
fn german_tasks_pair_with_their_english_counterparts() {
    let tasks: BTreeSet<&str> = [
        "x_de",
        "x_en",
        "arc_challenge_de",
        "arc_challenge",
        "mmlu_de",
        "mmlu",
        "truthfulqa_de",
        "truthfulqa_mc",
        "hellaswag_de",
        "hellaswag",
        "lonely_de",
        "perplexity_de",
        "perplexity_en",
    ]
    .into_iter()
    .collect();
    let pairs: Vec<(&str, Option<&str>)> = [
        "x_de",
        "arc_challenge_de",
        "mmlu_de",
        "truthfulqa_de",
        "hellaswag_de",
        "lonely_de",
        "perplexity_de",
        "x_en",
    ]
    .into_iter()
    .map(|t| (t, english_counterpart(t, &tasks)))
    .collect();
    assert_eq!(
        pairs,
        vec![
            ("x_de", Some("x_en")),
            ("arc_challenge_de", Some("arc_challenge")),
            ("mmlu_de", Some("mmlu")),
            ("truthfulqa_de", Some("truthfulqa_mc")),
            ("hellaswag_de", Some("hellaswag")),
            ("lonely_de", None),
            ("perplexity_de", Some("perplexity_en")),
            ("x_en", None),
        ]
    );
}

#[test]
fn pairs_hold_every_eval_stage_and_know_which_way_is_better() {
    let eval = |de: f64, en: f64, bpb: f64| {
        stage(
            &[],
            vec![
                point("x_de/acc", None, de),
                point("x_en/acc", None, en),
                point("x_en/acc_stderr", None, 0.01),
                point("perplexity_de/bits_per_byte", None, bpb),
                point("perplexity_en/bits_per_byte", None, bpb / 2.0),
                point("only_de/acc", None, 0.5),
            ],
        )
    };
    let data = ReportData::from_context(
        context(vec![
            ("eval_base", eval(0.25, 0.5, 1.5)),
            ("eval_chat", eval(0.4, 0.55, 1.2)),
        ]),
        None,
    );
    let acc = data.pairs.iter().find(|p| p.metric == "acc").unwrap();
    assert_eq!(
        (acc.german.as_str(), acc.english.as_str()),
        ("x_de", "x_en")
    );
    assert!(!acc.lower_is_better);
    let got: Vec<(&str, Option<f64>, Option<f64>)> = acc
        .values
        .iter()
        .map(|v| (v.stage.as_str(), v.german, v.english))
        .collect();
    assert_eq!(
        got,
        vec![
            ("eval_base", Some(0.25), Some(0.5)),
            ("eval_chat", Some(0.4), Some(0.55))
        ]
    );
    let bpb = data
        .pairs
        .iter()
        .find(|p| p.metric == "bits_per_byte")
        .unwrap();
    assert!(bpb.lower_is_better);
    assert_eq!(data.pairs.len(), 2, "only_de has no English counterpart");
    // The stderr is the row's, not a row of its own.
    let en = data
        .evals
        .iter()
        .find(|r| r.stage == "eval_base" && r.task == "x_en")
        .unwrap();
    assert_eq!(en.stderr, Some(0.01));
    assert!(!data.evals.iter().any(|r| r.metric.ends_with("_stderr")));
    let html = render_html(&data).unwrap();
    assert!(html.contains("bits_per_byte (lower is better)"), "{html}");
    assert!(html.contains("0.5000 ± 0.0100"), "{html}");
}

#[test]
fn hostile_names_and_params_are_escaped() {
    let hostile = "<script>alert(1)</script>";
    let mut s = stage(
        &[],
        vec![
            point(&format!("{hostile}_de/acc"), None, 0.3),
            point(&format!("{hostile}_en/acc"), None, 0.4),
            point("loss", Some(1), 2.0),
            point("loss", Some(2), 1.0),
        ],
    );
    s.params =
        json!({"run": format!("echo '{hostile}' \"&\""), "x\"><img src=x onerror=alert(2)>": 1});
    s.error = Some(format!("failed: {hostile}"));
    s.status = "failed".into();
    s.inputs.insert(
        "raw".into(),
        InputInfo {
            stage: None,
            output: None,
            uri: Some(format!("file:///data/{hostile}.txt")),
            digest: Some("sha256:0123".into()),
        },
    );
    let data = ReportData::from_context(context(vec![("t<b>x</b>", s)]), Some(hostile.into()));
    let html = render_html(&data).unwrap();
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<b>"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("t&lt;b&gt;x&lt;/b&gt;"));
}

#[test]
fn every_training_stage_gets_a_loss_chart() {
    let mut with_val = losses(20);
    with_val.push(point("val_loss", Some(10), 1.1));
    with_val.push(point("val_loss", Some(20), 0.9));
    let data = ReportData::from_context(
        context(vec![
            ("pretrain", stage(&[], with_val)),
            ("sft", stage(&["pretrain"], losses(5))),
            ("eval", stage(&["sft"], vec![point("x_de/acc", None, 0.3)])),
        ]),
        None,
    );
    assert_eq!(data.training, vec!["pretrain", "sft"]);
    let html = render_html(&data).unwrap();
    for name in ["pretrain", "sft"] {
        let marker = format!("<figure class=\"chart loss\" data-stage=\"{name}\"><svg");
        let at = html
            .find(&marker)
            .unwrap_or_else(|| panic!("no chart for {name}"));
        let figure = &html[at..at + html[at..].find("</figure>").unwrap()];
        assert!(figure.contains("<polyline"), "{figure}");
        assert!(figure.contains(&format!("{name}: loss")));
    }
    assert!(!html.contains("data-stage=\"eval\""));
    let pretrain = &html[html.find("data-stage=\"pretrain\"").unwrap()..];
    let pretrain = &pretrain[..pretrain.find("</figure>").unwrap()];
    assert!(
        pretrain.contains("val_loss"),
        "validation loss in the legend"
    );
}

#[test]
fn the_layered_layout_has_no_overlaps_and_edges_go_right() {
    let mut a = stage(&[], losses(2));
    a.inputs.insert(
        "raw".into(),
        InputInfo {
            stage: None,
            output: None,
            uri: Some("file:///data/raw.txt".into()),
            digest: Some("sha256:aa".into()),
        },
    );
    a.outputs.insert("model".into(), "sha256:bb".into());
    a.outputs.insert("tok".into(), "sha256:cc".into());
    let input = |stage: &str, output: &str| InputInfo {
        stage: Some(stage.into()),
        output: Some(output.into()),
        uri: None,
        digest: Some("sha256:bb".into()),
    };
    let mut b = stage(&["a"], vec![]);
    b.inputs.insert("model".into(), input("a", "model"));
    b.outputs.insert("out".into(), "sha256:dd".into());
    let mut c = stage(&["a"], vec![]);
    c.inputs.insert("tok".into(), input("a", "tok"));
    c.inputs.insert(
        "raw".into(),
        InputInfo {
            stage: None,
            output: None,
            uri: Some("file:///data/raw.txt".into()),
            digest: Some("sha256:aa".into()),
        },
    );
    let mut d = stage(&["b", "c"], vec![]);
    d.inputs.insert("out".into(), input("b", "out"));
    let data =
        ReportData::from_context(context(vec![("a", a), ("b", b), ("c", c), ("d", d)]), None);
    let g = graph(&data);
    // 4 stages, 1 external input (shared), outputs a.model, a.tok, b.out.
    assert_eq!(g.nodes.len(), 8);
    let rects = layout(&g);
    for i in 0..rects.len() {
        for j in i + 1..rects.len() {
            assert!(
                !rects[i].overlaps(&rects[j]),
                "{} overlaps {}",
                g.nodes[i].label,
                g.nodes[j].label
            );
        }
    }
    for e in &g.edges {
        assert!(
            rects[e.from].x + rects[e.from].w < rects[e.to].x,
            "{} -> {} goes left",
            g.nodes[e.from].label,
            g.nodes[e.to].label
        );
    }
    // d waits for c only in order (c's output is not d's input): a dashed edge.
    let idx = |l: &str| g.nodes.iter().position(|n| n.label == l).unwrap();
    assert!(g
        .edges
        .iter()
        .any(|e| e.from == idx("c") && e.to == idx("d") && e.order_only));
}
