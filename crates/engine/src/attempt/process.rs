//! An attempt's worker processes: one per rank, all in one process group led by rank 0, so that
//! every way of stopping an attempt (its end, timeout, cancel, a forced exit of the engine,
//! `leo resume` killing what a dead engine left) takes all of them along.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
use leo_plugin::{ENGINE_PID_ENV, INVOCATION_ENV};
use tokio::process::{Child, Command};

/// What every rank of an attempt is started with.
pub(super) struct Launch<'a> {
    /// Program and leading arguments; the rank's invocation file is appended.
    pub command: &'a [OsString],
    /// `leo worker` ties itself to the engine; other programs are tied between fork and exec.
    pub builtin: bool,
    pub work_dir: &'a Path,
    /// The stage's `env`, secrets filled in.
    pub env: &'a BTreeMap<String, String>,
    pub run_id: &'a str,
    pub stage: &'a str,
    pub gpus: &'a [String],
    /// `host:port` for multi-process stages.
    pub rendezvous: Option<&'a str>,
}

/// Variables with which another launcher (torchrun, a cluster) may have started leo itself;
/// a stage gets its own values or none.
const RANK_VARS: &[&str] = &[
    "LEO_RANK",
    "LEO_WORLD_SIZE",
    "LEO_RENDEZVOUS",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_RANK",
    "ROLE_RANK",
    "TORCHELASTIC_RUN_ID",
];

/// A rendezvous address for a multi-process attempt: a loopback port that was free a moment ago
/// (bound, read, released; rank 0 binds it again).
pub(super) fn free_rendezvous() -> Result<String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("finding a free loopback port for the ranks' rendezvous")?;
    let port = listener
        .local_addr()
        .context("reading the rendezvous port")?
        .port();
    Ok(format!("127.0.0.1:{port}"))
}

/// Starts one process per invocation (the rank is the index), rank 0 first as the leader of a
/// new process group that the others join. The group is registered before any other rank
/// starts, so a failure halfway kills what already runs.
pub(super) fn spawn_ranks(
    launch: &Launch<'_>,
    invocations: &[PathBuf],
) -> Result<(ProcessGroup, Vec<Child>)> {
    let world_size = u32::try_from(invocations.len()).context("too many ranks")?;
    let mut group: Option<ProcessGroup> = None;
    let mut children = Vec::with_capacity(invocations.len());
    for (rank, invocation) in (0..world_size).zip(invocations) {
        let mut cmd = rank_command(launch, rank, world_size, invocation)?;
        // Rank 0 leads a new group (pgid 0 = its own pid); the others join it.
        cmd.process_group(group.as_ref().map_or(0, |g| g.0));
        let child = cmd.spawn().with_context(|| {
            format!(
                "starting {} for stage {}{}",
                launch
                    .command
                    .first()
                    .map_or_else(Default::default, |p| p.to_string_lossy()),
                launch.stage,
                if world_size > 1 {
                    format!(" (rank {rank})")
                } else {
                    String::new()
                }
            )
        })?;
        if group.is_none() {
            let pid = child
                .id()
                .context("worker exited before it could be tracked")?;
            group = Some(ProcessGroup::new(
                i32::try_from(pid).context("worker pid out of range")?,
            ));
        }
        children.push(child);
    }
    let group = group.context("an attempt needs at least one rank")?;
    Ok((group, children))
}

fn rank_command(
    launch: &Launch<'_>,
    rank: u32,
    world_size: u32,
    invocation: &Path,
) -> Result<Command> {
    let (program, args) = launch
        .command
        .split_first()
        .context("plugin has no command")?;
    let mut cmd = Command::new(program);
    cmd.args(args).arg(invocation).current_dir(launch.work_dir);
    for var in RANK_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(launch.env)
        .env(INVOCATION_ENV, invocation)
        .env("LEO_RUN_ID", launch.run_id)
        .env("LEO_STAGE", launch.stage)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Rank variables, also under torchrun's names (all ranks run on this host).
    let rank = rank.to_string();
    let world_size = world_size.to_string();
    cmd.env("LEO_RANK", &rank)
        .env("LEO_WORLD_SIZE", &world_size)
        .env("RANK", &rank)
        .env("WORLD_SIZE", &world_size)
        .env("LOCAL_RANK", &rank)
        .env("LOCAL_WORLD_SIZE", &world_size);
    if let Some(rendezvous) = launch.rendezvous {
        let (addr, port) = rendezvous
            .rsplit_once(':')
            .with_context(|| format!("rendezvous `{rendezvous}` is not HOST:PORT"))?;
        cmd.env("LEO_RENDEZVOUS", rendezvous)
            .env("MASTER_ADDR", addr)
            .env("MASTER_PORT", port);
    }
    // Always set: a stage that asked for no GPU must not see (and grab) any. Every rank sees
    // all of the stage's GPUs and picks its own by LOCAL_RANK.
    cmd.env("CUDA_VISIBLE_DEVICES", launch.gpus.join(","));
    // A worker must die with the engine instead of running on unsupervised (resume reruns it).
    // `leo worker` arranges that itself (so the spawn can use the fast posix_spawn path);
    // external plugins get it between fork and exec.
    cmd.env(ENGINE_PID_ENV, std::process::id().to_string());
    if !launch.builtin {
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    Ok(cmd)
}

/// Process groups of running attempts, so a forced exit can take them along.
static LIVE_GROUPS: std::sync::Mutex<std::collections::BTreeSet<i32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// SIGKILLs every running attempt's process group and cancels its Slurm jobs (for a forced
/// exit of the engine).
pub fn kill_all_attempts() {
    super::slurm::cancel_all_jobs();
    if let Ok(groups) = LIVE_GROUPS.lock() {
        for pgid in groups.iter() {
            // SAFETY: signalling process groups this engine started.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// An attempt's process group (its id is rank 0's pid); SIGKILLed when dropped.
pub(super) struct ProcessGroup(i32);

impl ProcessGroup {
    fn new(pgid: i32) -> ProcessGroup {
        if let Ok(mut g) = LIVE_GROUPS.lock() {
            g.insert(pgid);
        }
        ProcessGroup(pgid)
    }

    pub fn id(&self) -> i32 {
        self.0
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling the attempt's own process group (its leader is rank 0).
        unsafe {
            libc::kill(-self.0, sig);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        if let Ok(mut g) = LIVE_GROUPS.lock() {
            g.remove(&self.0);
        }
    }
}
