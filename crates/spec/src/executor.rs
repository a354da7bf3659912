//! Where a stage runs: on this machine (`local`, the default) or as a Slurm job (`slurm`), with
//! the job's `sbatch` options from the workflow's `[slurm]` table and the stage's own `slurm`
//! table (the stage's values win; `extra` lines add up). A site profile
//! (`~/.config/leo/slurm.toml`) fills what both leave open when the job is submitted, so the
//! stored spec holds only what the workflow says.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::{parse_duration, parse_memory};

/// Which executor runs a stage's attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Executor {
    /// Child processes of the engine, one per rank.
    #[default]
    Local,
    /// One Slurm job per attempt: `sbatch` of a generated script whose `srun` starts the ranks.
    Slurm,
}

impl Executor {
    pub fn is_local(&self) -> bool {
        *self == Executor::Local
    }

    pub fn parse(text: &str) -> Result<Executor, String> {
        match text.trim() {
            "local" => Ok(Executor::Local),
            "slurm" => Ok(Executor::Slurm),
            other => Err(format!(
                "unknown executor `{other}`; expected `local` or `slurm`"
            )),
        }
    }
}

impl std::fmt::Display for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Executor::Local => "local",
            Executor::Slurm => "slurm",
        })
    }
}

/// A stage's `sbatch` options as the workflow states them (`None` = not stated: the site
/// profile's value, else derived from `resources`, else Slurm's default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// The job's time limit (`--time`); default: the stage's `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_secs: Option<u64>,
    /// Nodes of the job; the ranks (`world_size`) are spread evenly over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    /// Default: the stage's `gpus` / nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus_per_node: Option<u32>,
    /// Default: the stage's `cpus` / `world_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus_per_task: Option<u32>,
    /// Bytes per node (`--mem`); default: the stage's `memory` / nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_per_node: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    /// Further `sbatch` options, one per line, as `--name=value` (a leading `#SBATCH ` is
    /// accepted and dropped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
    /// Resubmissions after infrastructure failures (preemption, node failure, a job cancelled
    /// by someone else, the time limit reached with progress saved); default 3. Failures of the
    /// stage itself count against its `retries` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resubmits: Option<u32>,
}

impl SlurmOptions {
    pub fn is_empty(&self) -> bool {
        *self == SlurmOptions::default()
    }

    /// `self` where it states a value, else `base`; `extra` lines of both, `base`'s first.
    pub fn over(&self, base: &SlurmOptions) -> SlurmOptions {
        let mut extra = base.extra.clone();
        extra.extend(self.extra.iter().cloned());
        SlurmOptions {
            partition: self.partition.clone().or_else(|| base.partition.clone()),
            account: self.account.clone().or_else(|| base.account.clone()),
            qos: self.qos.clone().or_else(|| base.qos.clone()),
            time_secs: self.time_secs.or(base.time_secs),
            nodes: self.nodes.or(base.nodes),
            gpus_per_node: self.gpus_per_node.or(base.gpus_per_node),
            cpus_per_task: self.cpus_per_task.or(base.cpus_per_task),
            memory_per_node: self.memory_per_node.or(base.memory_per_node),
            constraint: self.constraint.clone().or_else(|| base.constraint.clone()),
            extra,
            resubmits: self.resubmits.or(base.resubmits),
        }
    }
}

/// The `[slurm]` table of a workflow or a stage, or a site profile's defaults, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlurm {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub time: Option<String>,
    pub nodes: Option<u32>,
    pub gpus_per_node: Option<u32>,
    pub cpus_per_task: Option<u32>,
    pub memory: Option<String>,
    pub constraint: Option<String>,
    #[serde(default)]
    pub extra: Vec<String>,
    pub resubmits: Option<u32>,
}

impl RawSlurm {
    /// Checks and converts; an error names the field (relative to the table) and says why.
    pub fn resolve(&self) -> Result<SlurmOptions, (Vec<String>, String)> {
        let field = |f: &str| vec![f.to_string()];
        let time_secs = match &self.time {
            None => None,
            Some(t) => {
                let d: Duration = parse_duration(t).map_err(|e| (field("time"), e))?;
                if d.as_secs() < 60 {
                    return Err((
                        field("time"),
                        format!("time `{t}` is shorter than Slurm's smallest limit, one minute"),
                    ));
                }
                Some(d.as_secs())
            }
        };
        let memory_per_node = match &self.memory {
            None => None,
            Some(m) => Some(parse_memory(m).map_err(|e| (field("memory"), e))?),
        };
        for (name, value) in [
            ("nodes", self.nodes),
            ("gpus_per_node", self.gpus_per_node),
            ("cpus_per_task", self.cpus_per_task),
        ] {
            if value == Some(0) && name != "gpus_per_node" {
                return Err((field(name), format!("{name} must be at least 1")));
            }
        }
        for (name, value) in [
            ("partition", &self.partition),
            ("account", &self.account),
            ("qos", &self.qos),
            ("constraint", &self.constraint),
        ] {
            if let Some(v) = value {
                check_option_value(v).map_err(|m| (field(name), m))?;
            }
        }
        let mut extra = Vec::new();
        for (i, line) in self.extra.iter().enumerate() {
            let line = line.trim();
            let line = line.strip_prefix("#SBATCH").map_or(line, str::trim);
            if !line.starts_with('-') || line.contains(['\n', '\r']) {
                return Err((
                    vec!["extra".into(), i.to_string()],
                    format!(
                        "`{line}` is not an sbatch option: write one option per entry, like \"--exclusive\" or \"--mail-type=END\""
                    ),
                ));
            }
            extra.push(line.to_string());
        }
        Ok(SlurmOptions {
            partition: self.partition.clone(),
            account: self.account.clone(),
            qos: self.qos.clone(),
            time_secs,
            nodes: self.nodes,
            gpus_per_node: self.gpus_per_node,
            cpus_per_task: self.cpus_per_task,
            memory_per_node,
            constraint: self.constraint.clone(),
            extra,
            resubmits: self.resubmits,
        })
    }
}

/// Values go into `#SBATCH --name=value` lines: one line, no spaces.
fn check_option_value(v: &str) -> Result<(), String> {
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!("`{v}` must be one word (no spaces or line breaks)"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_overrides_the_workflow_and_extra_lines_add_up() {
        let wf = SlurmOptions {
            partition: Some("gpu".into()),
            account: Some("proj".into()),
            extra: vec!["--exclusive".into()],
            ..Default::default()
        };
        let st = SlurmOptions {
            partition: Some("booster".into()),
            nodes: Some(2),
            extra: vec!["--mail-type=END".into()],
            ..Default::default()
        };
        let o = st.over(&wf);
        assert_eq!(o.partition.as_deref(), Some("booster"));
        assert_eq!(o.account.as_deref(), Some("proj"));
        assert_eq!(o.nodes, Some(2));
        assert_eq!(o.extra, ["--exclusive", "--mail-type=END"]);
    }

    fn load(text: &str) -> Result<crate::Loaded, String> {
        crate::load_str(std::path::Path::new("w.toml"), text.to_string()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_workflow_chooses_executors_and_stages_override_its_slurm_table() {
        let w = load(
            "[workflow]\nname = \"t\"\nexecutor = \"slurm\"\n\
             [slurm]\npartition = \"gpu\"\ntime = \"2h\"\n\
             [stages.a]\nplugin = \"shell\"\n\
             [stages.b]\nplugin = \"shell\"\nexecutor = \"local\"\n\
             [stages.c]\nplugin = \"shell\"\nresources = { world_size = 4 }\n\
             slurm = { nodes = 2, partition = \"booster\" }\n",
        )
        .unwrap();
        let st = &w.workflow.stages;
        assert_eq!(st["a"].executor, Executor::Slurm);
        assert_eq!(st["b"].executor, Executor::Local);
        assert_eq!(st["a"].slurm.partition.as_deref(), Some("gpu"));
        assert_eq!(st["c"].slurm.partition.as_deref(), Some("booster"));
        assert_eq!(
            (st["c"].slurm.nodes, st["c"].slurm.time_secs),
            (Some(2), Some(7200))
        );
    }

    #[test]
    fn mistakes_point_at_the_line_and_field() {
        let e =
            load("[workflow]\nname = \"t\"\nexecutor = \"k8s\"\n[stages.a]\nplugin = \"shell\"\n")
                .unwrap_err();
        assert!(
            e.starts_with("w.toml:3:1: workflow.executor: unknown executor `k8s`"),
            "{e}"
        );
        let e = load(
            "[workflow]\nname = \"t\"\n[stages.a]\nplugin = \"shell\"\nexecutor = \"slurm\"\n\
             resources = { world_size = 3 }\nslurm = { nodes = 2 }\n",
        )
        .unwrap_err();
        assert!(e.starts_with("w.toml:7:"), "{e}");
        // The same table on a local stage is no error: it only matters on Slurm.
        load(
            "[workflow]\nname = \"t\"\n[stages.a]\nplugin = \"shell\"\n\
             resources = { world_size = 3 }\nslurm = { nodes = 2 }\n",
        )
        .unwrap();
        assert!(
            e.contains(
                "stages.a.slurm.nodes: 3 ranks (world_size) cannot be spread evenly over 2 nodes"
            ),
            "{e}"
        );
        let e = load(
            "[workflow]\nname = \"t\"\n[slurm]\nparttion = \"x\"\n[stages.a]\nplugin = \"shell\"\n",
        )
        .unwrap_err();
        assert!(e.contains("unknown field `parttion`"), "{e}");
    }

    #[test]
    fn raw_tables_are_checked() {
        let raw = RawSlurm {
            time: Some("24h".into()),
            memory: Some("512GiB".into()),
            extra: vec!["#SBATCH --exclusive".into()],
            ..Default::default()
        };
        let o = raw.resolve().unwrap();
        assert_eq!(o.time_secs, Some(86_400));
        assert_eq!(o.memory_per_node, Some(512 << 30));
        assert_eq!(o.extra, ["--exclusive"]);
        let bad = RawSlurm {
            extra: vec!["exclusive".into()],
            ..Default::default()
        };
        assert_eq!(bad.resolve().unwrap_err().0, ["extra", "0"]);
        let bad = RawSlurm {
            partition: Some("gpu a100".into()),
            ..Default::default()
        };
        assert_eq!(bad.resolve().unwrap_err().0, ["partition"]);
        let bad = RawSlurm {
            time: Some("30s".into()),
            ..Default::default()
        };
        assert!(bad.resolve().unwrap_err().1.contains("one minute"));
        assert_eq!(Executor::parse("slurm"), Ok(Executor::Slurm));
        assert!(Executor::parse("k8s")
            .unwrap_err()
            .contains("`local` or `slurm`"));
    }
}
