//! The real LeoLM workflows (`workflows/leolm-*.toml`, all but the tiny one) validate, and
//! `leo plan` lists every stage and prints a cost estimate whose figures are LeoLM's: for 13B
//! stage 2, N = 13,015,864,320 (Llama-2-13b), D = 15,360 × 512 × 8,192 = 64.4B tokens and
//! 6·N·D within 10% of LEOLM.md's 5.0e21 FLOPs; GPU-hours follow from the printed MFU and
//! peak. `leo plan` must not touch the network: the Hub is pointed at a closed port and told
//! to stay offline, and nothing may appear in its cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use leo_e2e::*;
use serde_json::Value;

/// `workflows/leolm-*.toml` except `leolm-tiny.toml` (its own tests cover it).
fn real_workflows() -> Vec<PathBuf> {
    let dir = repo_root().join("workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("leolm-") && n.ends_with(".toml") && n != "leolm-tiny.toml"
            })
        })
        .collect();
    files.sort();
    files
}

/// The stages a workflow file declares: `[stages.NAME]` headers that are not commented out
/// (sub-tables such as `[stages.NAME.params]` name the same stage).
fn declared_stages(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("[stages."))
        .filter_map(|rest| rest.split(']').next())
        .map(|name| name.split('.').next().unwrap_or(name).to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `leo` in the sandbox with the Hub unreachable: offline, a closed port, a cache of its own.
fn offline(sb: &Sandbox, args: &[&str]) -> Command {
    let mut c = sb.cmd(args);
    c.env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HF_HOME", sb.path().join("hf-home"))
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN");
    c
}

fn ok(mut c: Command, what: &str) -> String {
    let out = c.output().expect("run leo");
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                files_under(&p)
            } else {
                1
            }
        })
        .sum()
}

fn within(value: f64, target: f64, tolerance: f64) -> bool {
    (value / target - 1.0).abs() <= tolerance
}

fn entry<'a>(plan: &'a Value, stage: &str) -> &'a Value {
    plan.as_array()
        .expect("leo plan --json prints an array of entries")
        .iter()
        .find(|e| e["stage"] == stage)
        .unwrap_or_else(|| panic!("no plan entry for `{stage}`: {plan}"))
}

/// GPU-hours = FLOPs / (peak × MFU) / 3600 s, with the peak and MFU the entry states.
fn assert_gpu_hours_follow(estimate: &Value, mfu: f64, peak_tflops: f64) {
    assert_eq!(estimate["mfu"].as_f64(), Some(mfu), "{estimate}");
    assert_eq!(
        estimate["peak_tflops"].as_f64(),
        Some(peak_tflops),
        "{estimate}"
    );
    let flops = estimate["flops"].as_f64().expect("flops");
    let dense = estimate["flops_dense"].as_f64().expect("flops_dense");
    let attention = estimate["flops_attention"]
        .as_f64()
        .expect("flops_attention");
    assert!(within(flops, dense + attention, 1e-12), "{estimate}");
    let hours = estimate["gpu_hours"].as_f64().expect("gpu_hours");
    let expected = flops / (peak_tflops * 1e12 * mfu) / 3600.0;
    assert!(within(hours, expected, 1e-9), "{hours} vs {expected}");
}

#[test]
fn every_real_workflow_validates_and_plans_with_leolm_costs() {
    let Some(sb) = Sandbox::local_pass_only() else {
        return;
    };
    let files = real_workflows();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "leolm-7b.toml",
        "leolm-13b.toml",
        "leolm-70b.toml",
        "leolm-13b-chat-bilingual.toml",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }

    let mut plans = std::collections::BTreeMap::new();
    for file in &files {
        let path = file.to_str().unwrap();
        let stages = declared_stages(file);
        for s in [
            "corpus", "tokenize", "pretrain", "sft", "eval", "mtbench", "report",
        ] {
            assert!(stages.iter().any(|n| n == s), "{path}: no stage {s}");
        }
        let out = ok(
            offline(&sb, &["validate", path]),
            &format!("validate {path}"),
        );
        assert!(
            out.contains(&format!("is valid ({} stages)", stages.len())),
            "{path}: {out}"
        );

        // Text: every stage on a line of its own, then the cost table at the stated MFU.
        let text = ok(offline(&sb, &["plan", path]), &format!("plan {path}"));
        for s in &stages {
            assert!(
                text.lines().any(|l| l.split_whitespace().next() == Some(s)),
                "{path}: stage {s} not listed:\n{text}"
            );
        }
        assert!(
            text.contains("cost estimate: A100 at 312 TFLOP/s bf16 peak, 45% MFU"),
            "{text}"
        );

        // JSON: the same stages, each training stage's estimate consistent with the MFU.
        let plan: Value = serde_json::from_str(&ok(
            offline(&sb, &["plan", path, "--json"]),
            &format!("plan --json {path}"),
        ))
        .unwrap();
        let mut listed: Vec<String> = plan
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["stage"].as_str().unwrap().to_string())
            .collect();
        listed.sort();
        assert_eq!(listed, stages, "{path}");
        let pretrain = &entry(&plan, "pretrain")["estimate"];
        assert_gpu_hours_follow(pretrain, 0.45, 312.0);
        // Stage 2 is LeoLM's in every file: 15,360 × 512 × 8,192 tokens.
        let tokens = pretrain["tokens"].as_f64().unwrap();
        assert!(within(tokens, 64.4e9, 0.005), "{path}: {tokens}");
        // The sft stage always has a parameter count (its expected architecture).
        assert!(
            entry(&plan, "sft")["estimate"]["parameters"].is_u64(),
            "{path}"
        );
        plans.insert(
            file.file_name().unwrap().to_string_lossy().into_owned(),
            plan,
        );
    }

    // LeoLM 13B, against LEOLM.md's "Cost on paper".
    let file = repo_root().join("workflows/leolm-13b.toml");
    let path = file.to_str().unwrap();
    let plan = &plans["leolm-13b.toml"];
    let e = &entry(plan, "pretrain")["estimate"];
    let n = e["parameters"].as_u64().unwrap();
    assert_eq!(n, 13_015_864_320, "Llama-2-13b's parameter count");
    assert!(within(n as f64, 13.0e9, 0.01));
    assert!(within(e["tokens"].as_f64().unwrap(), 64.4e9, 0.005));
    let dense = e["flops_dense"].as_f64().unwrap();
    assert!(within(dense, 5.0e21, 0.10), "6·N·D = {dense:e}");
    // Attention adds ~13% at 8k (LEOLM.md).
    let share = e["flops_attention"].as_f64().unwrap() / dense;
    assert!((0.11..0.15).contains(&share), "{share}");
    // The German mix: 3 epochs × 67.5M tokens.
    let sft = &entry(plan, "sft")["estimate"];
    assert_eq!(sft["tokens"].as_u64(), Some(202_500_000), "{sft}");
    assert_gpu_hours_follow(sft, 0.45, 312.0);

    // Another MFU and GPU: the hours follow them, and the text says which.
    let plan: Value = serde_json::from_str(&ok(
        offline(
            &sb,
            &["plan", path, "--json", "--mfu", "0.5", "--gpu", "h100"],
        ),
        "plan --json --mfu 0.5 --gpu h100",
    ))
    .unwrap();
    assert_gpu_hours_follow(&entry(&plan, "pretrain")["estimate"], 0.5, 989.0);
    let text = ok(
        offline(&sb, &["plan", path, "--mfu", "40", "--gpu", "h100"]),
        "plan --mfu 40 --gpu h100",
    );
    assert!(
        text.contains("H100 at 989 TFLOP/s bf16 peak, 40% MFU"),
        "{text}"
    );
    // The printed 13B stage-2 row: N, D, 6·N·D and the GPU-hours at 40% on H100s.
    let row = text
        .lines()
        .find(|l| l.starts_with("pretrain ") && l.contains("13,015,864,320"))
        .unwrap_or_else(|| panic!("no pretrain cost row:\n{text}"));
    assert!(
        row.contains("64,424,509,440") && row.contains("5.031e21"),
        "{row}"
    );
    let flops = dense + e["flops_attention"].as_f64().unwrap();
    let hours = (flops / (989e12 * 0.40) / 3600.0).round() as u64;
    let printed = format!("{},{:03}", hours / 1000, hours % 1000);
    assert!(
        row.split_whitespace().any(|c| c == printed),
        "{row}: GPU-hours {printed} expected"
    );

    // The bilingual chat file reuses the 13B file's stage 2 from the cache (docs/workflows.md):
    // everything from [vars] to the sft stage, params and inputs included, is the same text.
    let upstream_of_sft = |name: &str| {
        let text = std::fs::read_to_string(repo_root().join("workflows").join(name)).unwrap();
        let from = text.find("[vars]").expect("[vars]");
        let to = text.find("[stages.sft]").expect("[stages.sft]");
        text[from..to].to_string()
    };
    assert_eq!(
        upstream_of_sft("leolm-13b-chat-bilingual.toml"),
        upstream_of_sft("leolm-13b.toml")
    );

    // A bad MFU is the user's error, before anything is opened.
    let out = offline(&sb, &["plan", path, "--mfu", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--mfu"));

    // Nothing was fetched from the Hub.
    assert_eq!(files_under(&sb.path().join("hf-home")), 0);
}
