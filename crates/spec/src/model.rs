//! The validated workflow. Serialisable: a run stores it so `leo resume` cannot drift from an
//! edited file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::executor::{Executor, SlurmOptions};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub storage: Storage,
    /// Stages by name (sorted, so serialisation is canonical).
    pub stages: BTreeMap<String, Stage>,
}

/// Where run state and artifacts live. `None` means the engine's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Storage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub plugin: PluginRef,
    /// Every stage this one waits for: explicit `needs` plus the producers of its inputs. Sorted.
    pub needs: Vec<String>,
    pub inputs: BTreeMap<String, InputRef>,
    /// The plugin's parameters (TOML table converted to JSON, `${vars.*}` substituted).
    pub params: serde_json::Value,
    pub resources: Resources,
    pub retries: u32,
    #[serde(default, with = "opt_duration_secs")]
    pub timeout: Option<Duration>,
    pub env: BTreeMap<String, String>,
    /// Where its attempts run. Left out of the stored form when local, so runs stored before
    /// executors existed read back unchanged.
    #[serde(default, skip_serializing_if = "Executor::is_local")]
    pub executor: Executor,
    /// Its `sbatch` options as the workflow states them (used when `executor` is `slurm`, and
    /// by `leo plan --executor slurm`).
    #[serde(default, skip_serializing_if = "SlurmOptions::is_empty")]
    pub slurm: SlurmOptions,
}

/// Which code runs a stage.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginRef {
    /// A plugin compiled into `leo`, run as `leo worker NAME`.
    Builtin(String),
    /// Any executable speaking the worker protocol (`plugin = "exec:PATH"`).
    Exec(String),
}

impl std::fmt::Display for PluginRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginRef::Builtin(name) => f.write_str(name),
            PluginRef::Exec(path) => write!(f, "exec:{path}"),
        }
    }
}

/// A stage input: another stage's output, or data from outside the workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputRef {
    Stage { stage: String, output: String },
    External { uri: String },
}

/// What a stage reserves from the machine. `cpus`, `gpus` and `memory` are for the whole
/// stage, all of its processes together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: u32,
    pub gpus: u32,
    /// Bytes; `None` = no reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Worker processes (ranks) per attempt. Runs stored before it existed had one.
    #[serde(default = "one")]
    pub world_size: u32,
}

fn one() -> u32 {
    1
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpus: 1,
            gpus: 0,
            memory: None,
            world_size: 1,
        }
    }
}

mod opt_duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
