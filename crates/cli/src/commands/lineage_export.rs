//! `leo lineage --format dot|mermaid|openlineage`: the lineage tree (as `--format json` prints
//! it) in other shapes. OpenLineage: one `RunEvent` (COMPLETE) per stage attempt, its job
//! `leo/<workflow>` / `<stage>`, a `parent` facet naming the leo run, a `leo_attempt` facet with
//! plugin, params, host, timings and code provenance, and datasets named by artifact digest with
//! `version` facets (DatasetVersionDatasetFacet).

use std::collections::BTreeSet;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// leo and its version, as a URN (leo publishes no schema server; its own facets say so too).
const PRODUCER: &str = concat!("urn:leo:", env!("CARGO_PKG_VERSION"));
const SPEC: &str = "https://openlineage.io/spec";

/// Every (artifact, producing attempt) node of the tree, depth first, each artifact once.
fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    if v["repeated"].as_bool() != Some(true) {
        out.push(v);
    }
    for c in v["inputs"].as_array().into_iter().flatten() {
        walk(c, out);
    }
}

fn short(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

fn attempt_key(p: &Value) -> String {
    format!(
        "{}/{}/{}",
        p["run"].as_str().unwrap_or("?"),
        p["stage"].as_str().unwrap_or("?"),
        p["attempt"]
    )
}

fn attempt_label(p: &Value) -> String {
    format!(
        "{} #{} ({})",
        p["stage"].as_str().unwrap_or("?"),
        p["attempt"],
        p["run"].as_str().unwrap_or("?")
    )
}

/// Graph nodes as (id, label), and edges as (from, to).
type Graph = (Vec<(String, String)>, BTreeSet<(String, String)>);

/// Edges artifact -> attempt (input) and attempt -> artifact (output), deduplicated.
fn edges(tree: &Value) -> Graph {
    let mut nodes = Vec::new();
    walk(tree, &mut nodes);
    let mut labels = Vec::new();
    let mut edges = BTreeSet::new();
    for n in nodes {
        let digest = n["artifact"].as_str().unwrap_or("?").to_string();
        let art = format!("a_{}", short(&digest));
        let label = match n["uri"].as_str() {
            Some(uri) => format!("{} {uri}", short(&digest)),
            None => short(&digest),
        };
        labels.push((art.clone(), label));
        if let Some(p) = n.get("produced_by").filter(|p| !p.is_null()) {
            let att =
                format!("s_{:x}", Sha256::digest(attempt_key(p).as_bytes()))[..14].to_string();
            labels.push((att.clone(), attempt_label(p)));
            edges.insert((att.clone(), art.clone()));
            for c in n["inputs"].as_array().into_iter().flatten() {
                let d = c["artifact"].as_str().unwrap_or("?");
                edges.insert((format!("a_{}", short(d)), att.clone()));
            }
        }
    }
    labels.sort();
    labels.dedup();
    (labels, edges)
}

pub fn dot(tree: &Value) -> String {
    let (labels, edges) = edges(tree);
    let mut s = String::from("digraph lineage {\n  rankdir=LR;\n");
    for (id, label) in &labels {
        let shape = if id.starts_with("s_") { "box" } else { "note" };
        s.push_str(&format!(
            "  {id} [shape={shape}, label=\"{}\"];\n",
            label.replace('"', "'")
        ));
    }
    for (from, to) in &edges {
        s.push_str(&format!("  {from} -> {to};\n"));
    }
    s.push_str("}\n");
    s
}

pub fn mermaid(tree: &Value) -> String {
    let (labels, edges) = edges(tree);
    let mut s = String::from("flowchart LR\n");
    for (id, label) in &labels {
        let label = label.replace('"', "'");
        if id.starts_with("s_") {
            s.push_str(&format!("  {id}[\"{label}\"]\n"));
        } else {
            s.push_str(&format!("  {id}[(\"{label}\")]\n"));
        }
    }
    for (from, to) in &edges {
        s.push_str(&format!("  {from} --> {to}\n"));
    }
    s
}

/// A UUID (RFC 9562 version 8, name-based) derived from `name`: the same attempt always gets
/// the same run id.
fn uuid(name: &str) -> String {
    let h = Sha256::digest(name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

fn time(ms: &Value) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms.as_i64()?).map(|t| t.to_rfc3339())
}

fn dataset(n: &Value) -> Value {
    let digest = n["artifact"].as_str().unwrap_or("?");
    let mut d = json!({
        "namespace": "leo",
        "name": digest,
        "facets": {
            "version": {
                "_producer": PRODUCER,
                "_schemaURL": format!("{SPEC}/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet"),
                "datasetVersion": digest,
            }
        }
    });
    if let Some(uri) = n["uri"].as_str() {
        d["facets"]["leo_source"] = json!({
            "_producer": PRODUCER,
            "_schemaURL": "urn:leo:facet:SourceDatasetFacet:1",
            "uri": uri,
        });
    }
    d
}

pub fn openlineage(tree: &Value) -> Vec<Value> {
    let mut nodes = Vec::new();
    walk(tree, &mut nodes);
    let mut events = Vec::new();
    let mut done = BTreeSet::new();
    for n in nodes {
        let Some(p) = n.get("produced_by").filter(|p| !p.is_null()) else {
            continue;
        };
        let key = attempt_key(p);
        if !done.insert(key.clone()) {
            continue;
        }
        let workflow = p["workflow"].as_str().unwrap_or("workflow");
        let run = p["run"].as_str().unwrap_or("?");
        let inputs: Vec<Value> = n["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(dataset)
            .collect();
        let status = p["attempt_status"].as_str().unwrap_or("succeeded");
        let event_type = if status == "succeeded" {
            "COMPLETE"
        } else {
            "FAIL"
        };
        events.push(json!({
            "eventType": event_type,
            "eventTime": time(&p["finished_at"]).or_else(|| time(&p["started_at"])),
            "producer": PRODUCER,
            "schemaURL": format!("{SPEC}/2-0-2/OpenLineage.json#/$defs/RunEvent"),
            "run": {
                "runId": uuid(&key),
                "facets": {
                    "parent": {
                        "_producer": PRODUCER,
                        "_schemaURL": format!("{SPEC}/facets/1-0-1/ParentRunFacet.json#/$defs/ParentRunFacet"),
                        "run": { "runId": uuid(run) },
                        "job": { "namespace": "leo", "name": workflow },
                    },
                    "leo_attempt": {
                        "_producer": PRODUCER,
                        "_schemaURL": "urn:leo:facet:AttemptRunFacet:1",
                        "leoRun": run,
                        "attempt": p["attempt"],
                        "host": p["host"],
                        "startedAt": time(&p["started_at"]),
                        "plugin": p["code"]["plugin"],
                        "params": p["code"]["params"],
                        "provenance": p["provenance"],
                        "environment": p["environment"],
                    },
                },
            },
            "job": { "namespace": format!("leo/{workflow}"), "name": p["stage"] },
            "inputs": inputs,
            "outputs": [dataset(n)],
        }));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_well_formed_and_stable() {
        let a = uuid("run/stage/1");
        assert_eq!(a, uuid("run/stage/1"));
        assert_ne!(a, uuid("run/stage/2"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }
}
