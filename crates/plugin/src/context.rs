//! The run context: what the engine tells a plugin that asked for it (`wants_run_context`)
//! about the run and the stages upstream of its stage. Plugins never read the state database;
//! a stage that reports on a run (the `report` stage) gets this file instead.
//!
//! `leo report` builds the same structure from the state for every stage of a run, so both
//! render from one type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The file name of the run context in an attempt's work folder.
pub const RUN_CONTEXT_FILE: &str = "run_context.json";

/// Bumped when the run context changes incompatibly.
pub const RUN_CONTEXT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunContext {
    /// [`RUN_CONTEXT_VERSION`].
    pub leo_run_context: u32,
    pub run: RunInfo,
    /// The stages it covers, by name: for a stage's invocation, every stage upstream of it
    /// (transitively); for `leo report`, all of the run's stages.
    pub stages: BTreeMap<String, StageContext>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: String,
    pub workflow: String,
    /// `running`, `succeeded`, `failed` or `cancelled` when the context was made.
    pub status: String,
    /// Milliseconds since the Unix epoch.
    pub started_at: i64,
    /// When the run last changed state; its end once it is no longer running.
    pub ended_at: Option<i64>,
    /// leo version, git commit and dirty flag, host (as recorded with the run).
    pub provenance: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageContext {
    /// Plugin name as fingerprinted (`shell`, `exec:FILE`…).
    pub plugin: String,
    pub plugin_version: Option<String>,
    /// The params as the state stores them (secrets only ever appear as `${secret.NAME}`).
    pub params: Value,
    /// The stage's status in this run (`succeeded`, `cached`, `failed`, `skipped`…).
    pub status: String,
    pub error: Option<String>,
    pub fingerprint: Option<String>,
    /// Whether its outputs came from an earlier run's work (a cache hit).
    pub cached: bool,
    pub cached_from_run: Option<String>,
    /// The attempt that produced its outputs: in this run, or for a cached stage the original.
    pub produced_by: Option<AttemptRef>,
    /// This run's attempts of the stage, in order.
    pub attempts: Vec<AttemptInfo>,
    /// Every stage it waits for (its inputs' producers and `needs`), sorted.
    pub needs: Vec<String>,
    pub inputs: BTreeMap<String, InputInfo>,
    /// Output name -> artifact digest, once done.
    pub outputs: BTreeMap<String, String>,
    /// Every metric event of the producing run's attempts of the stage up to the producing
    /// one (earlier attempts resumed from checkpoints continue its curves); for a stage not
    /// done, all of this run's attempts.
    pub metrics: Vec<MetricPoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRef {
    pub run: String,
    pub stage: String,
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptInfo {
    pub number: u32,
    pub status: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
}

/// A stage input: another stage's output (`stage`, `output`) or an external URI, with the
/// digest the stage got when it is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub name: String,
    pub step: Option<u64>,
    /// Non-finite values (a diverged loss) travel as `null` and read back as NaN.
    #[serde(with = "finite_or_null")]
    pub value: f64,
    /// The attempt number (within its run) that reported it.
    pub attempt: u32,
}

/// JSON has no NaN or infinity: they are written as `null`, which reads back as NaN.
mod finite_or_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DescribeReply;

    #[test]
    fn non_finite_metric_values_round_trip_as_null() {
        let p = MetricPoint {
            name: "loss".into(),
            step: Some(3),
            value: f64::INFINITY,
            attempt: 1,
        };
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(text, r#"{"name":"loss","step":3,"value":null,"attempt":1}"#);
        let back: MetricPoint = serde_json::from_str(&text).unwrap();
        assert!(back.value.is_nan());
    }

    #[test]
    fn describe_replies_without_the_capability_stay_as_they_were() {
        let r: DescribeReply = serde_json::from_str(r#"{"outputs":["a"]}"#).unwrap();
        assert!(!r.wants_run_context);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"version":null,"outputs":["a"]}"#
        );
    }
}
