//! `leo worker-rank TEMPLATE -- COMMAND…`: one rank of a stage started by a cluster's launcher
//! (`srun` in leo's Slurm jobs, a pod of a Kubernetes indexed Job from `leo export k8s`).
//!
//! It takes the rank from the launcher's environment, writes that rank's invocation next to the
//! template (rank, world size, and the rendezvous `MASTER_ADDR:MASTER_PORT` for several
//! ranks), runs the stage's worker with it, touches `heartbeat-RANK` while it runs, and exits
//! as the worker did.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use leo_plugin::{Invocation, ENGINE_PID_ENV, INVOCATION_ENV};

/// Where a rank's number and the world size come from, first found first: Slurm's task
/// variables, a Kubernetes indexed Job's completion index, leo's own.
const RANK_FROM: &[&str] = &["SLURM_PROCID", "JOB_COMPLETION_INDEX", "LEO_RANK"];
const WORLD_FROM: &[&str] = &["SLURM_NTASKS", "LEO_WORLD_SIZE", "WORLD_SIZE"];
const LOCAL_RANK_FROM: &[&str] = &["SLURM_LOCALID", "LOCAL_RANK"];

pub fn run(template: &Path, command: &[OsString]) -> ExitCode {
    match run_inner(template, command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leo worker-rank: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The first of `names` that is set, as a number.
fn env_number(names: &[&str]) -> Result<Option<u32>> {
    for name in names {
        if let Ok(v) = std::env::var(name) {
            let n = v
                .trim()
                .parse()
                .with_context(|| format!("{name}={v:?} is not a number"))?;
            return Ok(Some(n));
        }
    }
    Ok(None)
}

/// Ranks per node: Slurm writes `SLURM_TASKS_PER_NODE` as `8(x2)` or `8,7`.
fn local_world() -> u32 {
    std::env::var("SLURM_TASKS_PER_NODE")
        .ok()
        .and_then(|v| {
            let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(1)
}

fn run_inner(template: &Path, command: &[OsString]) -> Result<ExitCode> {
    let (program, args) = command
        .split_first()
        .context("no worker command after `--`")?;
    let Some(rank) = env_number(RANK_FROM)? else {
        bail!(
            "no rank in the environment (looked for {}); `leo worker-rank` runs under srun or a Kubernetes indexed Job",
            RANK_FROM.join(", ")
        );
    };
    let world = env_number(WORLD_FROM)?.unwrap_or(1);
    if rank >= world {
        bail!("rank {rank} is not below the world size {world}");
    }
    let local_rank = env_number(LOCAL_RANK_FROM)?.unwrap_or(0);
    let rendezvous = if world > 1 {
        let addr = std::env::var("MASTER_ADDR").context("MASTER_ADDR is not set")?;
        let port = std::env::var("MASTER_PORT").context("MASTER_PORT is not set")?;
        Some(format!("{addr}:{port}"))
    } else {
        None
    };

    let text =
        std::fs::read(template).with_context(|| format!("reading {}", template.display()))?;
    let mut inv: Invocation = serde_json::from_slice(&text)
        .with_context(|| format!("parsing invocation {}", template.display()))?;
    inv.rank = rank;
    inv.world_size = world;
    inv.rendezvous = rendezvous.clone();
    let dir = template.parent().unwrap_or(Path::new("."));
    let invocation = dir.join(format!("invocation-rank-{rank}.json"));
    std::fs::write(&invocation, serde_json::to_vec_pretty(&inv)?)
        .with_context(|| format!("writing {}", invocation.display()))?;

    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .arg(&invocation)
        .env_remove(ENGINE_PID_ENV)
        .env(INVOCATION_ENV, &invocation)
        .env("LEO_RANK", rank.to_string())
        .env("LEO_WORLD_SIZE", world.to_string())
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", local_rank.to_string())
        .env("LOCAL_WORLD_SIZE", local_world().to_string());
    match &rendezvous {
        Some(r) => cmd.env("LEO_RENDEZVOUS", r),
        None => cmd.env_remove("LEO_RENDEZVOUS"),
    };
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", program.to_string_lossy()))?;
    outlive_stop_signals();

    let heartbeat = dir.join(format!("heartbeat-{rank}"));
    let interval = std::env::var("LEO_HEARTBEAT_INTERVAL")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::from_secs(30), Duration::from_secs);
    beat(&heartbeat);
    std::thread::spawn(move || loop {
        std::thread::sleep(interval);
        beat(&heartbeat);
    });
    let status = child.wait().context("waiting for the worker")?;
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(sig)) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)),
        _ => ExitCode::FAILURE,
    })
}

/// Slurm signals every process of a step when it stops it (preemption, `scancel`, the time
/// limit): the worker saves a checkpoint and exits, and this process must still be there to
/// wait for it: once a step's task exits, Slurm kills what is left of the step. A handler that
/// does nothing keeps it alive (the worker, started before, keeps the default dispositions).
fn outlive_stop_signals() {
    extern "C" fn ignore(_: libc::c_int) {}
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1, libc::SIGUSR2] {
        // SAFETY: installing an async-signal-safe handler that does nothing.
        unsafe {
            libc::signal(sig, ignore as *const () as libc::sighandler_t);
        }
    }
}

/// A heartbeat is the file's modification time; its text says when, for people.
fn beat(path: &Path) {
    let now = chrono::Utc::now().to_rfc3339();
    let _ = std::fs::write(path, now + "\n");
}
