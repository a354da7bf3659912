//! A throwaway Slurm cluster for one test, on this machine: one node (`localhost`, this
//! machine's CPUs), one partition (`debug`), and accounting, so that `sbatch`, `srun`, `squeue`,
//! `scancel`, `scontrol` and `sacct` behave as on a real cluster.
//!
//! Everything lives in a temp folder: a MUNGE daemon with its own key and socket, a MariaDB
//! server (`mariadb-install-db` + `mariadbd`), `slurmdbd`, `slurmctld` and `slurmd`, each in the
//! foreground as a child of the test process with its own log file, on free loopback ports. No
//! file under /etc or /var is read or written and no system service is used, so several clusters
//! run side by side. Dropping the cluster cancels its jobs, stops the daemons and removes the
//! folder.
//!
//! Slurm 22.05 notes (Debian bookworm), for whoever builds on this:
//! - the MUNGE socket of `AuthInfo=socket=…` serves the daemons and the commands, but a
//!   connection to slurmdbd (slurmctld's, `sacctmgr`'s, `sacct`'s) authenticates with the socket
//!   named by `AccountingStoragePass`, so both name ours;
//! - slurmctld exits at its first start when slurmdbd does not answer ("no TRES"), so slurmdbd
//!   goes first; slurmctld registers the cluster with slurmdbd itself;
//! - the daemons bind every address unless `CommunicationParameters=NoCtldInAddrAny,NoInAddrAny`
//!   (which also keeps `srun`'s ports on loopback);
//! - `sacct` lags the controller: a job that `squeue` no longer lists may be missing from `sacct`,
//!   or (to `sacct -j ID`) be a stand-in record named `allocation` without a partition, for up to
//!   about 5 s ([`AccountedJob::is_final`], [`SlurmCluster::wait_accounted`]);
//! - a job step's `slurmstepd` is not the child of `slurmd` (it is re-parented to init) and
//!   outlives a killed slurmd, so drop finds it by the slurmd log it keeps open and kills it with
//!   its tasks.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// How long [`SlurmCluster::start`] waits for the cluster to become usable.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one client command (`squeue`, `sacct`, …) may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The environment variable every daemon carries (and its children inherit): this cluster's dir.
const MARKER: &str = "LEO_SLURM_CLUSTER";
/// What to install where a program is missing.
const INSTALL_HINT: &str =
    "Debian: apt-get install slurmctld slurmd slurmdbd slurm-client munge mariadb-server";

/// The Slurm and MariaDB programs a cluster needs.
const DAEMONS: [&str; 4] = ["munged", "slurmdbd", "slurmctld", "slurmd"];
const CLIENTS: [&str; 8] = [
    "sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo", "sacct", "sacctmgr",
];

/// A running cluster. Dropping it cancels every job, stops the daemons (SIGTERM, SIGKILL after a
/// few seconds) and the processes of job steps still running, and removes its files.
pub struct SlurmCluster {
    name: String,
    cpus: u32,
    conf: PathBuf,
    /// In start order.
    daemons: Vec<Daemon>,
    dir: tempfile::TempDir,
}

struct Daemon {
    name: &'static str,
    child: Child,
}

/// One job as `sacct -X` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountedJob {
    pub id: String,
    pub name: String,
    /// Empty in the stand-in record accounting holds until the controller has sent the job's
    /// own (see [`AccountedJob::is_final`]).
    pub partition: String,
    /// The state's first word: `COMPLETED`, `FAILED`, `CANCELLED` (sacct's `CANCELLED by 0`),
    /// `TIMEOUT`, `RUNNING`, `PENDING`, …
    pub state: String,
    /// `EXIT:SIGNAL`, e.g. `0:0`, `3:0`, `0:15`.
    pub exit_code: String,
}

impl AccountedJob {
    /// Whether the job has ended and accounting holds its full record. A job that ends quickly
    /// first shows (to `sacct -j`) as a stand-in named `allocation`, with no partition and no
    /// eligible time, made from its end message; slurmctld sends the job's own record up to 5 s
    /// later (its db-index thread runs every 5 s).
    pub fn is_final(&self) -> bool {
        !self.partition.is_empty()
            && !matches!(
                self.state.as_str(),
                "PENDING" | "RUNNING" | "REQUEUED" | "RESIZING" | "SUSPENDED" | "COMPLETING" | ""
            )
    }
}

/// A start that failed because a daemon exited (a port taken meanwhile, say): worth a retry
/// with other ports.
#[derive(Debug)]
struct DaemonExited(String);

impl std::fmt::Display for DaemonExited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DaemonExited {}

impl SlurmCluster {
    /// Whether the programs a cluster needs are installed (Debian: slurmctld slurmd slurmdbd
    /// slurm-client munge mariadb-server).
    pub fn available() -> bool {
        missing_programs().is_empty()
    }

    /// A cluster for a test; `None`, with the reason printed, when Slurm is not installed and
    /// the tests do not run in CI. In CI (`CI=true`) a missing Slurm panics, never skips; so does
    /// a cluster that does not start.
    pub fn for_test() -> Option<SlurmCluster> {
        let missing = missing_programs();
        if !missing.is_empty() {
            let what = format!(
                "Slurm is not installed (missing {}; {INSTALL_HINT})",
                missing.join(", ")
            );
            assert!(!crate::in_ci(), "CI=true and {what}");
            eprintln!("skipped: {what}");
            return None;
        }
        Some(SlurmCluster::start().expect("a Slurm cluster for the test"))
    }

    /// Creates and starts a cluster; returns when its node is idle in `sinfo` and accounting
    /// lists the cluster. A daemon that exits while starting (a free port taken meanwhile) makes
    /// it try again with other ports; the error of a cluster that does not come up ends with the
    /// daemons' logs.
    pub fn start() -> Result<SlurmCluster> {
        let missing = missing_programs();
        if !missing.is_empty() {
            bail!(
                "Slurm is not installed: missing {} ({INSTALL_HINT})",
                missing.join(", ")
            );
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match SlurmCluster::try_start() {
                Ok(cluster) => return Ok(cluster),
                Err(e) if attempt < 3 && e.downcast_ref::<DaemonExited>().is_some() => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn try_start() -> Result<SlurmCluster> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let deadline = Instant::now() + START_TIMEOUT;
        let dir = tempfile::Builder::new().prefix("leo-slurm-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let d = dir.path().to_path_buf();
        for sub in ["state", "spool", "db", "tmp"] {
            std::fs::create_dir(d.join(sub))?;
        }
        // Cluster names become table names in the accounting database: lower case, short.
        let name = format!(
            "leo{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let node = node_hardware(&d);
        let [db_port, dbd_port, ctld_port, slurmd_port] = free_ports()?;
        let user = user_name()?;
        let conf = d.join("slurm.conf");
        let munge_socket = d.join("munge.sock");

        write_munge_key(&d.join("munge.key"))?;
        std::fs::write(d.join("plugstack.conf"), "")?;
        write_file(
            &d.join("slurmdbd.conf"),
            slurmdbd_conf(&d, &user, &munge_socket, dbd_port, db_port),
            0o600,
        )?;
        write_file(
            &conf,
            slurm_conf(&SlurmConf {
                dir: &d,
                name: &name,
                user: &user,
                munge_socket: &munge_socket,
                dbd_port,
                ctld_port,
                slurmd_port,
                node: &node,
            }),
            0o644,
        )?;

        let mut cluster = SlurmCluster {
            name,
            cpus: node.cpus,
            conf,
            daemons: Vec::new(),
            dir,
        };

        let mut munged = Command::new(program("munged")?);
        munged
            .args(["--foreground", "--force", "--num-threads=4"])
            .arg(format!("--key-file={}", d.join("munge.key").display()))
            .arg(format!("--socket={}", munge_socket.display()))
            .arg(format!("--pid-file={}", d.join("munged.pid").display()))
            .arg(format!("--log-file={}", d.join("munged.log").display()))
            .arg(format!("--seed-file={}", d.join("munged.seed").display()));
        cluster.spawn("munged", munged)?;

        // The database's system tables, then the server; both while munged starts.
        let root = unsafe { libc::geteuid() } == 0;
        let mut install = Command::new(mariadb_program("mariadb-install-db", "mysql_install_db")?);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("db").display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .args(mariadb_tuning(&d));
        if root {
            install.arg("--user=root");
        }
        install.env("TMPDIR", d.join("tmp"));
        let out = run(&mut cluster.env_cmd(install), CLIENT_TIMEOUT * 2)
            .context("running mariadb-install-db")?;
        std::fs::write(
            d.join("mariadb-install-db.log"),
            [&out.stdout[..], &out.stderr].concat(),
        )?;
        if !out.status.success() {
            bail!(
                "mariadb-install-db failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut mariadbd = Command::new(mariadb_program("mariadbd", "mysqld")?);
        mariadbd
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("db").display()))
            .arg(format!("--socket={}", d.join("mariadb.sock").display()))
            .arg(format!("--pid-file={}", d.join("mariadb.pid").display()))
            .arg(format!("--log-error={}", d.join("mariadb.log").display()))
            .arg(format!("--port={db_port}"))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
            .args(mariadb_tuning(&d));
        if root {
            mariadbd.arg("--user=root");
        }
        cluster.spawn("mariadbd", mariadbd)?;
        cluster.wait_until(deadline, "munged's socket", |_| Ok(munge_socket.exists()))?;
        cluster.wait_until(deadline, "MariaDB on its port", |_| Ok(listening(db_port)))?;

        // slurmdbd creates its tables before it listens; slurmctld needs it up at its first start.
        let mut slurmdbd = Command::new(program("slurmdbd")?);
        slurmdbd.arg("-D");
        cluster.spawn("slurmdbd", slurmdbd)?;
        cluster.wait_until(deadline, "slurmdbd on its port", |_| {
            Ok(listening(dbd_port))
        })?;
        let mut slurmctld = Command::new(program("slurmctld")?);
        slurmctld.args(["-D", "-f"]).arg(&cluster.conf);
        cluster.spawn("slurmctld", slurmctld)?;
        cluster.wait_until(deadline, "slurmctld on its port", |_| {
            Ok(listening(ctld_port))
        })?;
        let mut slurmd = Command::new(program("slurmd")?);
        slurmd
            .args(["-D", "-N", "localhost", "-f"])
            .arg(&cluster.conf);
        cluster.spawn("slurmd", slurmd)?;
        cluster.wait_until(deadline, "the node to be idle in sinfo", |c| {
            let out = c.client_output(&["sinfo", "-h", "-N", "-o", "%T"])?;
            Ok(out.trim() == "idle")
        })?;
        // slurmctld registers the cluster with slurmdbd as it starts; should it not have, ask.
        let mut asked = false;
        let registered_by = Instant::now() + Duration::from_secs(5);
        cluster.wait_until(deadline, "accounting to list the cluster", |c| {
            let out =
                c.client_output(&["sacctmgr", "-n", "-P", "show", "cluster", "format=cluster"])?;
            if out.lines().any(|l| l.trim() == c.name) {
                return Ok(true);
            }
            if !asked && Instant::now() > registered_by {
                asked = true;
                c.client_output(&["sacctmgr", "-i", "add", "cluster", &c.name])?;
            }
            Ok(false)
        })?;
        Ok(cluster)
    }

    /// The environment a process needs to use this cluster through the Slurm commands on PATH
    /// (`sbatch`, `srun`, `squeue`, `scancel`, `scontrol`, `sacct`): `SLURM_CONF`. Jobs inherit
    /// it (sbatch exports the submitter's environment).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "SLURM_CONF".to_string(),
            self.conf.to_string_lossy().into_owned(),
        )]
    }

    /// This cluster's slurm.conf.
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// The cluster's folder (logs, state, database); removed on drop. Jobs may write there.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its `ClusterName` (unique per cluster).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's CPUs (this machine's, as `slurmd -C` counts them).
    pub fn cpus(&self) -> u32 {
        self.cpus
    }

    /// A Slurm command (`sbatch`, `srun`, …) that talks to this cluster, with the `SLURM_*`
    /// variables of any surrounding allocation removed.
    pub fn client(&self, program: &str) -> Command {
        let path = find_program(program).unwrap_or_else(|| program.into());
        self.env_cmd(Command::new(path))
    }

    /// `sbatch --parsable ARGS`: the new job's id.
    pub fn sbatch(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["sbatch", "--parsable"];
        all.extend_from_slice(args);
        let out = self.client_output(&all)?;
        // --parsable prints `ID` or `ID;CLUSTER`.
        let id = out.trim().split(';').next().unwrap_or_default().to_string();
        if id.is_empty() {
            bail!("sbatch printed no job id");
        }
        Ok(id)
    }

    /// The ids of the jobs `squeue` lists (pending, running, completing).
    pub fn queued_jobs(&self) -> Result<Vec<String>> {
        let out = self.client_output(&["squeue", "-h", "-o", "%i"])?;
        Ok(out
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// Every job accounting knows of (`sacct -X`, all users, since 2000), in submit order.
    pub fn accounted_jobs(&self) -> Result<Vec<AccountedJob>> {
        self.sacct(None)
    }

    /// Waits until accounting has `job_id`'s full record in a final state (sacct lags the
    /// controller by up to about 5 s: [`AccountedJob::is_final`]) and returns it.
    pub fn wait_accounted(&self, job_id: &str, within: Duration) -> Result<AccountedJob> {
        let deadline = Instant::now() + within;
        loop {
            let last = self
                .sacct(Some(job_id))?
                .into_iter()
                .find(|j| j.id == job_id);
            match last {
                Some(job) if job.is_final() => return Ok(job),
                _ if Instant::now() > deadline => bail!(
                    "job {job_id} has no final state in sacct after {within:?} (last: {last:?}); \
                     squeue: {:?}\n{}",
                    self.queued_jobs().unwrap_or_default(),
                    self.log_tail(20)
                ),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn sacct(&self, job: Option<&str>) -> Result<Vec<AccountedJob>> {
        let mut args = vec![
            "sacct",
            "-X",
            "-n",
            "-P",
            "-a",
            "-S",
            "2000-01-01",
            "-E",
            "now",
        ];
        if let Some(job) = job {
            args.extend(["-j", job]);
        }
        // The name last: it may hold the separator.
        args.extend(["-o", "JobID,Partition,State,ExitCode,JobName"]);
        let out = self.client_output(&args)?;
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let fields: Vec<&str> = line.splitn(5, '|').collect();
                let [id, partition, state, exit_code, name] = fields[..] else {
                    bail!("unexpected sacct line: {line}");
                };
                Ok(AccountedJob {
                    id: id.to_string(),
                    name: name.to_string(),
                    partition: partition.to_string(),
                    state: state
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                    exit_code: exit_code.to_string(),
                })
            })
            .collect()
    }

    /// The last `lines` lines of each daemon's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let d = self.dir.path();
        let mut text = String::new();
        // Each daemon's log file; where there is none yet, its stdout and stderr (a daemon that
        // fails before it opens its log says why there; Slurm's daemons in the foreground copy
        // their log there too).
        let files = [
            ("munged.log", "munged.out"),
            ("mariadb.log", "mariadbd.out"),
            ("slurmdbd.log", "slurmdbd.out"),
            ("slurmctld.log", "slurmctld.out"),
            ("slurmd.log", "slurmd.out"),
        ];
        for (log, out) in files {
            let read = |file: &str| {
                std::fs::read_to_string(d.join(file))
                    .ok()
                    .filter(|c| !c.trim().is_empty())
                    .map(|c| (file.to_string(), c))
            };
            let Some((file, content)) = read(log).or_else(|| read(out)) else {
                continue;
            };
            let all: Vec<&str> = content.lines().collect();
            text.push_str(&format!("== {file} ==\n"));
            for line in &all[all.len().saturating_sub(lines)..] {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// The processes of this cluster now: its daemons, the `slurmstepd`s of its job steps and
    /// their descendants (the jobs' processes). Drop leaves none of them running.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: HashSet<u32> = self.daemons.iter().map(|d| d.child.id()).collect();
        pids.extend(self.marked_processes());
        let mut pids: Vec<u32> = pids.into_iter().collect();
        pids.sort_unstable();
        pids
    }

    /// This cluster's daemons and every process that has one of its Slurm logs open (a
    /// `slurmstepd` keeps slurmd's log open and is re-parented to init, not kept by slurmd) or
    /// carries its marker in the environment, with all their descendants; never this process.
    /// (The environment alone does not do: `slurmstepd` and `slurmscriptd` write their titles
    /// over the start of theirs.)
    fn marked_processes(&self) -> Vec<u32> {
        let me = std::process::id();
        let d = self.dir.path();
        let marker = format!("{MARKER}={}", d.display());
        let logs: Vec<PathBuf> = ["slurmd.log", "slurmctld.log", "slurmdbd.log"]
            .iter()
            .map(|l| d.join(l))
            .collect();
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut roots: Vec<u32> = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid …; comm may hold spaces and parentheses.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let mut fields = after.split_whitespace();
            let state = fields.next().unwrap_or("");
            if state == "Z" || state == "X" {
                continue;
            }
            if let Some(ppid) = fields.next().and_then(|p| p.parse::<u32>().ok()) {
                children.entry(ppid).or_default().push(pid);
            }
            let has_marker = std::fs::read(entry.path().join("environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()));
            let has_log = || {
                std::fs::read_dir(entry.path().join("fd"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| logs.contains(&t)))
            };
            if has_marker || has_log() {
                roots.push(pid);
            }
        }
        let mut seen: HashSet<u32> = HashSet::new();
        let mut stack = roots;
        while let Some(pid) = stack.pop() {
            if pid != me && seen.insert(pid) {
                stack.extend(children.get(&pid).into_iter().flatten());
            }
        }
        seen.into_iter().collect()
    }

    /// Starts a daemon of this cluster: its output in `NAME.out`, the marker in its environment,
    /// killed by the kernel should the test process die first.
    fn spawn(&mut self, name: &'static str, cmd: Command) -> Result<()> {
        let d = self.dir.path();
        let out = std::fs::File::create(d.join(format!("{name}.out")))?;
        let mut cmd = self.env_cmd(cmd);
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .current_dir(d)
            .env(MARKER, d)
            .env("TMPDIR", d.join("tmp"));
        // SAFETY: prctl is async-signal-safe; nothing is allocated between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child =
            spawn_from_long_lived_thread(cmd).with_context(|| format!("starting {name}"))?;
        self.daemons.push(Daemon { name, child });
        Ok(())
    }

    /// `cmd` with this cluster's environment and no `SLURM_*` variables of a surrounding job.
    fn env_cmd(&self, cmd: Command) -> Command {
        let mut cmd = cmd;
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SLURM_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env());
        cmd
    }

    /// Runs a Slurm command against this cluster; its stdout, or an error with its stderr.
    fn client_output(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.client(args[0]);
        cmd.args(&args[1..]);
        let out = run(&mut cmd, CLIENT_TIMEOUT)?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Polls `ready` until it says yes; fails when a daemon exits or at the deadline, with the
    /// daemons' logs.
    fn wait_until(
        &mut self,
        deadline: Instant,
        what: &str,
        mut ready: impl FnMut(&SlurmCluster) -> Result<bool>,
    ) -> Result<()> {
        let mut last_err = None;
        loop {
            for daemon in &mut self.daemons {
                if let Some(status) = daemon.child.try_wait()? {
                    let name = daemon.name;
                    return Err(anyhow!(DaemonExited(format!(
                        "{name} exited ({status}) while the Slurm cluster started (waiting for \
                         {what})\n{}",
                        self.log_tail(30)
                    ))));
                }
            }
            match ready(self) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_err = Some(e),
            }
            if Instant::now() > deadline {
                let last = last_err
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default();
                bail!(
                    "the Slurm cluster did not come up within {START_TIMEOUT:?}: no {what}{last}\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn alive(&mut self, name: &str) -> bool {
        self.daemons
            .iter_mut()
            .any(|d| d.name == name && matches!(d.child.try_wait(), Ok(None)))
    }

    /// SIGTERM to `names`, SIGKILL to those still running after `grace`; reaps them.
    fn stop(&mut self, names: &[&str], grace: Duration) {
        let group: Vec<usize> = (0..self.daemons.len())
            .filter(|&i| names.contains(&self.daemons[i].name))
            .collect();
        for &i in &group {
            let child = &mut self.daemons[i].child;
            if let Ok(None) = child.try_wait() {
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + grace;
        for &i in &group {
            let child = &mut self.daemons[i].child;
            while let Ok(None) = child.try_wait() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        // Cancel what is queued or running, and give the jobs a moment to end (KillWait=5).
        if self.alive("slurmctld") {
            if let Ok(jobs) = self.queued_jobs() {
                if !jobs.is_empty() {
                    let mut args = vec!["scancel"];
                    args.extend(jobs.iter().map(String::as_str));
                    let _ = self.client_output(&args);
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < deadline
                        && self.queued_jobs().is_ok_and(|j| !j.is_empty())
                    {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
        let grace = Duration::from_secs(3);
        self.stop(&["slurmd", "slurmctld"], grace);
        self.stop(&["slurmdbd"], grace);
        self.stop(&["mariadbd", "munged"], grace);
        // Job steps that outlived slurmd (their slurmstepd is not its child), with their tasks.
        for _ in 0..10 {
            let left = self.marked_processes();
            if left.is_empty() {
                break;
            }
            for pid in left {
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The temp dir goes with `self.dir`.
    }
}

/// The programs of [`DAEMONS`], [`CLIENTS`] and MariaDB that cannot be found.
fn missing_programs() -> Vec<&'static str> {
    let mut missing: Vec<&'static str> = DAEMONS
        .iter()
        .chain(CLIENTS.iter())
        .copied()
        .filter(|p| find_program(p).is_none())
        .collect();
    if mariadb_program("mariadbd", "mysqld").is_err() {
        missing.push("mariadbd");
    }
    if mariadb_program("mariadb-install-db", "mysql_install_db").is_err() {
        missing.push("mariadb-install-db");
    }
    missing
}

/// A program on PATH or in an sbin folder (not on a non-root user's PATH).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn program(name: &str) -> Result<PathBuf> {
    find_program(name).ok_or_else(|| anyhow!("{name} is not installed"))
}

fn mariadb_program(name: &str, old_name: &str) -> Result<PathBuf> {
    program(name).or_else(|_| program(old_name))
}

/// MariaDB settings for a small, disposable server: little memory and disk, no syncing.
fn mariadb_tuning(dir: &Path) -> Vec<String> {
    vec![
        format!("--tmpdir={}", dir.join("tmp").display()),
        "--innodb-buffer-pool-size=64M".into(),
        "--innodb-log-file-size=8M".into(),
        "--innodb-data-file-path=ibdata1:4M:autoextend".into(),
        "--innodb-temp-data-file-path=ibtmp1:4M:autoextend".into(),
        "--innodb-flush-log-at-trx-commit=0".into(),
        "--innodb-doublewrite=0".into(),
        "--innodb-lock-wait-timeout=900".into(),
        "--innodb-autoextend-increment=4".into(),
        "--skip-log-bin".into(),
    ]
}

/// What `slurmd -C` sees, for the node's line.
struct Hardware {
    cpus: u32,
    /// `Boards=… SocketsPerBoard=… CoresPerSocket=… ThreadsPerCore=…`, when known.
    topology: String,
    real_memory_mb: u64,
}

fn node_hardware(dir: &Path) -> Hardware {
    let fallback_cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let fallback_mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(1024, |kb| kb / 1024);
    // slurmd -C reads no config when SLURM_CONF names a file that does not exist (yet).
    let out = Command::new(find_program("slurmd").unwrap_or_else(|| "slurmd".into()))
        .arg("-C")
        .env("SLURM_CONF", dir.join("slurm.conf"))
        .stderr(Stdio::null())
        .output();
    let line = out
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default();
    let fields: HashMap<&str, &str> = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let cpus = fields
        .get("CPUs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(fallback_cpus);
    let topology = [
        "Boards",
        "SocketsPerBoard",
        "CoresPerSocket",
        "ThreadsPerCore",
    ]
    .iter()
    .map(|k| fields.get(k).map(|v| format!("{k}={v}")))
    .collect::<Option<Vec<_>>>()
    .map(|v| v.join(" "))
    .unwrap_or_default();
    let mem = fields
        .get("RealMemory")
        .and_then(|v| v.parse().ok())
        .unwrap_or(fallback_mem);
    Hardware {
        cpus,
        topology,
        // A bit less than there is: a node with more memory configured than found is drained.
        real_memory_mb: (mem * 95 / 100).max(1),
    }
}

struct SlurmConf<'a> {
    dir: &'a Path,
    name: &'a str,
    user: &'a str,
    munge_socket: &'a Path,
    dbd_port: u16,
    ctld_port: u16,
    slurmd_port: u16,
    node: &'a Hardware,
}

fn slurm_conf(c: &SlurmConf) -> String {
    let d = c.dir.display();
    let socket = c.munge_socket.display();
    let node = c.node;
    format!(
        "\
# A throwaway cluster of leo_testkit::SlurmCluster.
ClusterName={name}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
AuthInfo=socket={socket}
CredType=cred/munge
SlurmUser={user}
SlurmdUser={user}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={d}/plugstack.conf
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=1,bf_interval=1
ReturnToService=2
MpiDefault=none
KillWait=5
MinJobAge=300
InactiveLimit=0
Waittime=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd_port}
# For connections to slurmdbd, the MUNGE socket is this one (AuthInfo is not used for them).
AccountingStoragePass={socket}
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} {topology} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
",
        name = c.name,
        user = c.user,
        ctld_port = c.ctld_port,
        slurmd_port = c.slurmd_port,
        dbd_port = c.dbd_port,
        cpus = node.cpus,
        topology = node.topology,
        mem = node.real_memory_mb,
    )
}

fn slurmdbd_conf(
    dir: &Path,
    user: &str,
    munge_socket: &Path,
    dbd_port: u16,
    db_port: u16,
) -> String {
    let d = dir.display();
    format!(
        "\
AuthType=auth/munge
AuthInfo=socket={socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={dbd_port}
CommunicationParameters=NoInAddrAny
SlurmUser={user}
PidFile={d}/slurmdbd.pid
LogFile={d}/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=root
StorageLoc=slurm_acct_db
",
        socket = munge_socket.display(),
    )
}

/// 1024 random bytes, readable by the owner only (munged insists).
fn write_munge_key(path: &Path) -> Result<()> {
    let mut key = [0u8; 1024];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    write_file(path, key, 0o400)
}

fn write_file(path: &Path, content: impl AsRef<[u8]>, mode: u32) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(content.as_ref())?;
    // The mode given at creation is masked by the umask; set it as asked.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Four different free loopback ports.
fn free_ports() -> Result<[u16; 4]> {
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < 4 {
        let port = crate::free_port()?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok([ports[0], ports[1], ports[2], ports[3]])
}

fn listening(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// The effective user's name (SlurmUser, SlurmdUser).
fn user_name() -> Result<String> {
    let uid = unsafe { libc::geteuid() };
    // SAFETY: getpwuid returns a pointer into static storage or null; read it at once.
    let pw = unsafe { libc::getpwuid(uid) };
    if pw.is_null() {
        bail!("no passwd entry for uid {uid}");
    }
    let name = unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) };
    Ok(name.to_string_lossy().into_owned())
}

/// Runs `cmd` to its end, killing it after `timeout`.
fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{program} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Spawns `cmd` from a thread that lives as long as the process. PR_SET_PDEATHSIG fires when the
/// *thread* that forked a child ends, so daemons forked from a test's own thread (or a tokio
/// blocking thread) would be killed with it; forked from here, only the process's death kills
/// them.
fn spawn_from_long_lived_thread(cmd: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("leo-testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}
