//! The stage's statistics as JSON, metrics and a table for people.

use std::fmt::Write;

use serde_json::{json, Value};

use crate::config::Config;
use crate::pipeline::{Removed, Stats};

pub fn to_json(stats: &Stats, config: &Config) -> Value {
    let removed =
        |r: &Removed| json!({"documents": r.documents, "bytes": r.bytes, "reasons": r.reasons});
    json!({
        "input": {
            "files": stats.files,
            "documents": stats.documents_in,
            "bytes": stats.bytes_in,
            "malformed": stats.malformed,
            "malformed_examples": stats.malformed_examples,
        },
        "filters": stats.filters.iter().map(|(name, r)| {
            let mut v = removed(r);
            v["name"] = Value::from(name.clone());
            v
        }).collect::<Vec<_>>(),
        "language_backend": stats.language_backend,
        "dedup": {
            "exact": removed(&stats.exact_dedup),
            "minhash": {
                "documents": stats.minhash_dedup.documents,
                "bytes": stats.minhash_dedup.bytes,
                "clusters": stats.minhash_clusters,
            },
        },
        "output": {
            "documents": stats.documents_out,
            "bytes": stats.bytes_out,
            "shards": stats.shards,
        },
        "seconds": stats.seconds,
        "documents_per_second": stats.documents_in as f64 / stats.seconds.max(1e-9),
        "mb_per_second": stats.bytes_in as f64 / 1e6 / stats.seconds.max(1e-9),
        "config": config,
    })
}

pub fn metrics(stats: &Stats) -> Vec<(String, f64)> {
    let mut out = vec![
        ("documents_in".to_string(), stats.documents_in as f64),
        ("documents_out".to_string(), stats.documents_out as f64),
        ("bytes_out".to_string(), stats.bytes_out as f64),
        ("malformed".to_string(), stats.malformed as f64),
        (
            "removed_exact_dedup".to_string(),
            stats.exact_dedup.documents as f64,
        ),
        (
            "removed_minhash_dedup".to_string(),
            stats.minhash_dedup.documents as f64,
        ),
        (
            "docs_per_second".to_string(),
            stats.documents_in as f64 / stats.seconds.max(1e-9),
        ),
    ];
    for (name, r) in &stats.filters {
        out.push((format!("removed_{name}"), r.documents as f64));
    }
    out
}

pub fn render(stats: &Stats) -> String {
    let mut s = String::new();
    let pct = |n: u64| 100.0 * n as f64 / (stats.documents_in.max(1)) as f64;
    let _ = writeln!(
        s,
        "corpus: {} documents ({:.1} MB) from {} files in {:.1} s ({:.0} docs/s, {:.1} MB/s)",
        stats.documents_in,
        stats.bytes_in as f64 / 1e6,
        stats.files,
        stats.seconds,
        stats.documents_in as f64 / stats.seconds.max(1e-9),
        stats.bytes_in as f64 / 1e6 / stats.seconds.max(1e-9),
    );
    if stats.malformed > 0 {
        let _ = writeln!(s, "  malformed records skipped: {}", stats.malformed);
    }
    let _ = writeln!(
        s,
        "  {:<20} {:>10} {:>7} {:>12}",
        "step", "removed", "%", "MB removed"
    );
    let mut row = |name: &str, r: &Removed| {
        let _ = writeln!(
            s,
            "  {:<20} {:>10} {:>6.2}% {:>12.2}",
            name,
            r.documents,
            pct(r.documents),
            r.bytes as f64 / 1e6
        );
    };
    for (name, r) in &stats.filters {
        row(name, r);
    }
    row("exact dedup", &stats.exact_dedup);
    row("minhash dedup", &stats.minhash_dedup);
    let _ = writeln!(
        s,
        "  kept {} documents ({:.1} MB) in {} shards; {} near-duplicate clusters",
        stats.documents_out,
        stats.bytes_out as f64 / 1e6,
        stats.shards,
        stats.minhash_clusters
    );
    s
}
