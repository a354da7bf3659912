//! Conformance with datatrove, the corpus tool the field trusts: on the shared German corpus
//! (26k real documents) each filter family keeps the same documents as datatrove's filter
//! with the same settings, and MinHash finds the same near-duplicate clusters.
//!
//! The peer runs from the venv `tools/datatrove-env.sh` creates (`just test` does), given as
//! `LEO_DATATROVE_PYTHON`, with fastText's lid.176 model at `LEO_LID176_MODEL`.

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use leo_plugin_corpus::config::Config;
use support::{corpus, kept_ids, run_stage};

fn peer() -> (PathBuf, PathBuf) {
    let python = std::env::var_os("LEO_DATATROVE_PYTHON").expect(
        "LEO_DATATROVE_PYTHON is not set: run the tests with `just test` (it sets up the datatrove venv)",
    );
    let model =
        std::env::var_os("LEO_LID176_MODEL").expect("LEO_LID176_MODEL is not set: run `just test`");
    (python.into(), model.into())
}

/// Runs datatrove once for all families (it takes a few minutes), caching nothing.
fn datatrove(out: &Path) -> (HashMap<String, BTreeSet<String>>, Vec<Vec<String>>) {
    let (python, model) = peer();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/datatrove_reference.py");
    let status = Command::new(python)
        .arg(script)
        .arg(corpus())
        .arg(&model)
        .arg(out)
        .env("HF_HUB_OFFLINE", "1")
        .status()
        .expect("running datatrove_reference.py");
    assert!(status.success(), "datatrove_reference.py failed");
    let kept: HashMap<String, Vec<String>> =
        serde_json::from_slice(&std::fs::read(out.join("kept.json")).expect("kept.json"))
            .expect("kept.json");
    let clusters: Vec<Vec<String>> =
        serde_json::from_slice(&std::fs::read(out.join("clusters.json")).expect("clusters.json"))
            .expect("clusters.json");
    (
        kept.into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect(),
        clusters,
    )
}

fn only(family: &str) -> Config {
    let mut c = support::reading_only();
    let f = &mut c.filters;
    f.language.enabled = family == "language";
    f.language.use_metadata = false;
    f.gopher_repetition.enabled = family == "gopher_repetition";
    f.gopher_quality.enabled = family == "gopher_quality";
    f.fineweb_quality.enabled = family == "fineweb_quality";
    f.c4.enabled = family == "c4";
    c
}

fn pairs(clusters: &[Vec<String>]) -> HashSet<(String, String)> {
    let mut out = HashSet::new();
    for c in clusters {
        let mut ids = c.clone();
        ids.sort();
        for i in 0..ids.len() {
            for j in i + 1..ids.len() {
                out.insert((ids[i].clone(), ids[j].clone()));
            }
        }
    }
    out
}

#[test]
fn filters_and_minhash_agree_with_datatrove() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (reference, reference_clusters) = datatrove(&tmp.path().join("datatrove"));
    let (_, model) = peer();
    let total = 26_048usize;

    let mut report = Vec::new();
    for family in [
        "language",
        "gopher_repetition",
        "gopher_quality",
        "fineweb_quality",
        "c4",
    ] {
        let out = tmp.path().join(family);
        let lid = (family == "language").then_some(model.as_path());
        let stats = run_stage(&only(family), &out, lid);
        assert_eq!(stats.documents_in as usize, total);
        let ours = kept_ids(&out.join("documents"));
        let theirs = &reference[family];
        let only_ours: Vec<_> = ours.difference(theirs).take(5).collect();
        let only_theirs: Vec<_> = theirs.difference(&ours).take(5).collect();
        let differ = ours.symmetric_difference(theirs).count();
        report.push(format!(
            "{family}: leo keeps {}, datatrove {}, {differ} differ (only leo: {only_ours:?}; only datatrove: {only_theirs:?})",
            ours.len(),
            theirs.len()
        ));
        // A family that keeps or drops everything would make the comparison meaningless.
        assert!(
            theirs.len() > total / 200 && theirs.len() < total - total / 200,
            "{family}: {}",
            theirs.len()
        );
        assert!(
            differ * 1000 <= total * 5,
            "{family}: {differ} documents decided differently (limit 0.5%)\n{}",
            report.join("\n")
        );
    }
    println!("{}", report.join("\n"));

    let mut c = only("none");
    c.dedup.minhash.enabled = true;
    let out = tmp.path().join("minhash");
    run_stage(&c, &out, None);
    let ours: Vec<Vec<String>> = std::fs::read_to_string(out.join("stats/clusters.jsonl"))
        .expect("clusters.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("cluster line"))
        .collect();
    let (ours, theirs) = (pairs(&ours), pairs(&reference_clusters));
    let common = ours.intersection(&theirs).count() as f64;
    let precision = common / ours.len().max(1) as f64;
    let recall = common / theirs.len().max(1) as f64;
    let f1 = 2.0 * precision * recall / (precision + recall).max(1e-12);
    println!(
        "minhash: leo {} pairs, datatrove {} pairs, F1 {f1:.5} (precision {precision:.5}, recall {recall:.5})",
        ours.len(),
        theirs.len()
    );
    assert!(
        theirs.len() > 1000,
        "datatrove found only {} pairs",
        theirs.len()
    );
    assert!(f1 >= 0.98, "pairwise F1 {f1} < 0.98");
}
