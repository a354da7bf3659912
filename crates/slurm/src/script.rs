//! The `sbatch` script of one attempt: the resources the workflow states, then one `srun` step
//! that starts one `leo worker-rank` per rank.
//!
//! No secret is ever written here: the stage's environment reaches the job through `sbatch`'s
//! own environment (`--export=ALL`, Slurm's default), not through the file.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use leo_spec::{Resources, SlurmOptions};

/// Where each rank's stdout and stderr go, in the attempt's folder (`%t` is the rank). Rank 0's
/// stdout carries the stage's events.
pub const RANK_OUT: &str = "rank-%t.out";
pub const RANK_ERR: &str = "rank-%t.err";

/// What an attempt's job asks for and runs.
pub struct JobScript<'a> {
    pub job_name: &'a str,
    /// The attempt's folder, which the compute nodes must see (a shared filesystem).
    pub work_dir: &'a Path,
    /// The workflow's options over the site profile's.
    pub options: &'a SlurmOptions,
    pub resources: &'a Resources,
    /// The stage's timeout: the job's time limit unless `options.time_secs` says otherwise.
    pub timeout: Option<Duration>,
    /// `leo` as the compute nodes see it.
    pub leo: &'a Path,
    /// The stage's worker command (the invocation path is appended per rank).
    pub command: &'a [String],
    /// The rank-0 invocation every rank's own invocation is made from.
    pub invocation: &'a Path,
    /// How often each rank touches its heartbeat file.
    pub heartbeat: Duration,
    /// A comment line saying what this job is.
    pub comment: &'a str,
}

impl JobScript<'_> {
    pub fn render(&self) -> Result<String> {
        let o = self.options;
        let r = self.resources;
        let world = r.world_size.max(1);
        let nodes = o.nodes.unwrap_or(1).max(1);
        if !world.is_multiple_of(nodes) {
            bail!("{world} ranks cannot be spread evenly over {nodes} nodes");
        }
        // sbatch splits `#SBATCH` lines at spaces unless quoted, and reads `%` in file names
        // as a pattern (`%j`): such a folder cannot be written into the script faithfully.
        let work = self.work_dir.display().to_string();
        if work.contains(['%', '"', '\n', '\r']) {
            bail!(
                "the attempt folder {work} contains `%`, `\"` or a line break, which sbatch would misread; run leo from a folder without them"
            );
        }
        let tasks_per_node = world / nodes;
        let gpus_per_node = o.gpus_per_node.unwrap_or_else(|| r.gpus.div_ceil(nodes));
        let cpus_per_task = o.cpus_per_task.unwrap_or_else(|| (r.cpus / world).max(1));
        let mem_per_node = o
            .memory_per_node
            .or(r.memory.map(|m| m.div_ceil(u64::from(nodes))));
        let time = o.time_secs.map(Duration::from_secs).or(self.timeout);

        let mut s = String::from("#!/bin/bash\n");
        let mut opt = |line: String| {
            let _ = writeln!(s, "#SBATCH {line}");
        };
        opt(format!("--job-name={}", self.job_name));
        for (name, value) in [
            ("partition", &o.partition),
            ("account", &o.account),
            ("qos", &o.qos),
            ("constraint", &o.constraint),
        ] {
            if let Some(v) = value {
                opt(format!("--{name}={v}"));
            }
        }
        if let Some(t) = time {
            opt(format!("--time={}", slurm_time(t)));
        }
        opt(format!("--nodes={nodes}"));
        opt(format!("--ntasks-per-node={tasks_per_node}"));
        opt(format!("--cpus-per-task={cpus_per_task}"));
        if gpus_per_node > 0 {
            opt(format!("--gpus-per-node={gpus_per_node}"));
        }
        if let Some(m) = mem_per_node {
            opt(format!("--mem={}M", m.div_ceil(1 << 20)));
        }
        opt(format!("--chdir=\"{work}\""));
        opt(format!(
            "--output=\"{}\"",
            self.work_dir.join("slurm-%j.out").display()
        ));
        // leo resubmits (and resumes) itself, so that each try is an attempt it knows of.
        opt("--no-requeue".into());
        for line in &o.extra {
            opt(line.clone());
        }

        let _ = writeln!(s, "# {}", self.comment);
        s.push_str("set -euo pipefail\n");
        s.push_str(
            "# The ranks meet on the job's first node, at a port derived from the job id.\n",
        );
        s.push_str(
            "export MASTER_ADDR=\"$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\"\n",
        );
        s.push_str("export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))\n");
        let _ = writeln!(
            s,
            "export LEO_HEARTBEAT_INTERVAL={}",
            self.heartbeat.as_secs().max(1)
        );
        let _ = write!(
            s,
            "srun --nodes={nodes} --ntasks={world} --ntasks-per-node={tasks_per_node} \
             --cpus-per-task={cpus_per_task} --kill-on-bad-exit=1 \\\n    \
             --output={} --error={} \\\n    {} worker-rank {} --",
            quote(&self.work_dir.join(RANK_OUT).display().to_string()),
            quote(&self.work_dir.join(RANK_ERR).display().to_string()),
            quote(&self.leo.display().to_string()),
            quote(&self.invocation.display().to_string()),
        );
        for arg in self.command {
            let _ = write!(s, " {}", quote(arg));
        }
        s.push('\n');
        Ok(s)
    }
}

/// Slurm's `--time` format, `D-HH:MM:SS`, rounded up to whole minutes (Slurm's unit).
pub fn slurm_time(d: Duration) -> String {
    let minutes = d.as_secs().div_ceil(60).max(1);
    let (days, rest) = (minutes / 1440, minutes % 1440);
    format!("{days}-{:02}:{:02}:00", rest / 60, rest % 60)
}

/// A word for bash: as it is when it is plainly safe, else in single quotes.
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(options: &SlurmOptions, resources: &Resources) -> String {
        JobScript {
            job_name: "leo-13b-pretrain",
            work_dir: Path::new("/shared/.leo/work/r1/pretrain/attempt-1"),
            options,
            resources,
            timeout: Some(Duration::from_secs(2 * 86_400)),
            leo: Path::new("/opt/leo/bin/leo"),
            command: &[
                "/opt/leo/bin/leo-torch".into(),
                "worker".into(),
                "pretrain".into(),
            ],
            invocation: Path::new("/shared/.leo/work/r1/pretrain/attempt-1/invocation.json"),
            heartbeat: Duration::from_secs(30),
            comment: "stage pretrain",
        }
        .render()
        .unwrap()
    }

    #[test]
    fn resources_become_per_node_and_per_task_requests() {
        let r = Resources {
            cpus: 64,
            gpus: 16,
            memory: Some(1024 << 30),
            world_size: 16,
        };
        let o = SlurmOptions {
            partition: Some("booster".into()),
            nodes: Some(2),
            extra: vec!["--exclusive".into()],
            ..Default::default()
        };
        let s = script(&o, &r);
        for line in [
            "#SBATCH --partition=booster\n",
            "#SBATCH --time=2-00:00:00\n",
            "#SBATCH --nodes=2\n",
            "#SBATCH --ntasks-per-node=8\n",
            "#SBATCH --cpus-per-task=4\n",
            "#SBATCH --gpus-per-node=8\n",
            "#SBATCH --mem=524288M\n",
            "#SBATCH --exclusive\n",
            "--ntasks=16 ",
            "/opt/leo/bin/leo worker-rank /shared/.leo/work/r1/pretrain/attempt-1/invocation.json -- /opt/leo/bin/leo-torch worker pretrain\n",
        ] {
            assert!(s.contains(line), "missing {line:?} in\n{s}");
        }
        assert!(!s.contains("--account"), "{s}");
    }

    #[test]
    fn times_round_up_to_minutes_and_odd_words_are_quoted() {
        assert_eq!(slurm_time(Duration::from_secs(61)), "0-00:02:00");
        assert_eq!(slurm_time(Duration::from_secs(90_000)), "1-01:00:00");
        assert_eq!(quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(quote("/plain/path.json"), "/plain/path.json");
    }
}
