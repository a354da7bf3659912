//! `SlurmCluster` against real Slurm daemons: batch and multi-task jobs, accounting, cleanup,
//! and two clusters side by side. Skipped (with a message) where Slurm is not installed, except
//! in CI, where that fails.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use leo_testkit::SlurmCluster;

/// Whether the process is gone (reaped, or a zombie waiting for init).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn output_of(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("running a Slurm command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until squeue lists `job` as running.
fn wait_running(cluster: &SlurmCluster, job: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = output_of(cluster.client("squeue").args(["-h", "-j", job, "-o", "%T"]));
        if state.trim() == "RUNNING" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} is not running after 30 s (squeue: {state:?})\n{}",
            cluster.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn batch_and_multi_task_jobs_run_are_accounted_and_cleaned_up() {
    let started = Instant::now();
    let Some(cluster) = SlurmCluster::for_test() else {
        return;
    };
    eprintln!("SlurmCluster::start: {:?}", started.elapsed());
    assert!(cluster.cpus() >= 1);
    let env = cluster.env();
    assert_eq!(env.len(), 1);
    assert_eq!(env[0].0, "SLURM_CONF");
    assert_eq!(PathBuf::from(&env[0].1), cluster.conf_path());

    // srun with two tasks: ranks 0 and 1 on node `localhost`, a name that resolves.
    let t = Instant::now();
    let printed = output_of(cluster.client("srun").args([
        "-n",
        "2",
        "-J",
        "two-tasks",
        "bash",
        "-c",
        "echo rank=$SLURM_PROCID of=$SLURM_NTASKS \
         node=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n1)",
    ]));
    eprintln!("srun -n 2: {:?}", t.elapsed());
    let mut lines: Vec<&str> = printed.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["rank=0 of=2 node=localhost", "rank=1 of=2 node=localhost"]
    );
    use std::net::ToSocketAddrs;
    assert!(("localhost", 1).to_socket_addrs().is_ok());

    // Batch jobs, submitted together (accounting has each one's record up to 5 s after its
    // end): one that prints, one that fails, and a two-task job whose steps are srun'd inside it
    // (how multi-rank jobs run).
    let t = Instant::now();
    let out = cluster.dir().join("%x-%j.out");
    let out = out.to_str().unwrap();
    let hello = cluster
        .sbatch(&["-J", "hello", "-o", out, "--wrap", "echo hi"])
        .unwrap();
    let fails = cluster
        .sbatch(&["-J", "fails", "-o", out, "--wrap", "exit 3"])
        .unwrap();
    let ranks = cluster
        .sbatch(&[
            "-n",
            "2",
            "-J",
            "ranks",
            "-o",
            out,
            "--wrap",
            "srun bash -c 'echo rank=$SLURM_PROCID'",
        ])
        .unwrap();
    let within = Duration::from_secs(60);
    let accounted = cluster.wait_accounted(&hello, within).unwrap();
    eprintln!("sbatch to COMPLETED in sacct: {:?}", t.elapsed());
    assert_eq!(accounted.name, "hello");
    assert_eq!(accounted.partition, "debug");
    assert_eq!(
        (accounted.state.as_str(), accounted.exit_code.as_str()),
        ("COMPLETED", "0:0"),
        "{}",
        cluster.log_tail(20)
    );
    let printed =
        std::fs::read_to_string(cluster.dir().join(format!("hello-{hello}.out"))).unwrap();
    assert_eq!(printed, "hi\n");

    let accounted = cluster.wait_accounted(&fails, within).unwrap();
    assert_eq!(
        (accounted.state.as_str(), accounted.exit_code.as_str()),
        ("FAILED", "3:0")
    );

    let accounted = cluster.wait_accounted(&ranks, within).unwrap();
    assert_eq!(accounted.state, "COMPLETED", "{}", cluster.log_tail(20));
    let printed =
        std::fs::read_to_string(cluster.dir().join(format!("ranks-{ranks}.out"))).unwrap();
    let mut lines: Vec<&str> = printed.lines().collect();
    lines.sort();
    assert_eq!(lines, ["rank=0", "rank=1"]);
    assert!(cluster.queued_jobs().unwrap().is_empty());

    let names: Vec<String> = cluster
        .accounted_jobs()
        .unwrap()
        .into_iter()
        .map(|j| j.name)
        .collect();
    assert_eq!(names, ["two-tasks", "hello", "fails", "ranks"]);

    // A job still running at drop: it goes with the cluster, as do the daemons and the folder.
    let sleeper = cluster
        .sbatch(&["-J", "sleeper", "-o", "/dev/null", "--wrap", "sleep 300"])
        .unwrap();
    wait_running(&cluster, &sleeper);
    assert_eq!(cluster.queued_jobs().unwrap(), [sleeper]);
    // RUNNING comes before slurmstepd has started the batch script: wait for its `sleep`.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.pids().iter().any(|p| {
        std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0300"))
    }) {
        assert!(
            Instant::now() < deadline,
            "the job's `sleep 300` did not start within 30 s\n{}",
            cluster.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pids = cluster.pids();
    // munged, mariadbd, slurmdbd, slurmctld, slurmd, and the job: slurmstepd, bash, sleep.
    let cmdlines: Vec<String> = pids
        .iter()
        .map(|p| {
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            format!(
                "{p}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            )
        })
        .collect();
    assert!(pids.len() >= 8, "{cmdlines:#?}");
    let dir = cluster.dir().to_path_buf();
    let t = Instant::now();
    drop(cluster);
    eprintln!("drop with a running job: {:?}", t.elapsed());
    let left: Vec<u32> = pids.into_iter().filter(|&p| !gone(p)).collect();
    assert!(left.is_empty(), "processes left after drop: {left:?}");
    assert!(!dir.exists(), "{} is still there", dir.display());
}

#[test]
fn two_clusters_at_once_each_see_only_their_own_jobs() {
    if !SlurmCluster::available() {
        // for_test prints the reason, or fails in CI.
        assert!(SlurmCluster::for_test().is_none());
        return;
    }
    let t = Instant::now();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(SlurmCluster::start);
        let b = s.spawn(SlurmCluster::start);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    eprintln!("two SlurmCluster::start at once: {:?}", t.elapsed());
    assert_ne!(a.conf_path(), b.conf_path());
    assert_ne!(a.name(), b.name());

    let in_a = a
        .sbatch(&["-J", "in-a", "-o", "/dev/null", "--wrap", "true"])
        .unwrap();
    let in_b = b
        .sbatch(&["-J", "in-b", "-o", "/dev/null", "--wrap", "true"])
        .unwrap();
    assert_eq!(
        a.wait_accounted(&in_a, Duration::from_secs(60))
            .unwrap()
            .state,
        "COMPLETED"
    );
    assert_eq!(
        b.wait_accounted(&in_b, Duration::from_secs(60))
            .unwrap()
            .state,
        "COMPLETED"
    );
    let names = |c: &SlurmCluster| -> Vec<String> {
        c.accounted_jobs()
            .unwrap()
            .into_iter()
            .map(|j| j.name)
            .collect()
    };
    assert_eq!(names(&a), ["in-a"]);
    assert_eq!(names(&b), ["in-b"]);

    // A job queued in one is not in the other's queue.
    let sleeper = a
        .sbatch(&["-J", "a-sleeps", "-o", "/dev/null", "--wrap", "sleep 300"])
        .unwrap();
    assert_eq!(a.queued_jobs().unwrap(), [sleeper]);
    assert!(b.queued_jobs().unwrap().is_empty());

    // Dropping one leaves the other working.
    let a_pids = a.pids();
    drop(a);
    assert!(a_pids.iter().all(|&p| gone(p)));
    let after = b
        .sbatch(&["-J", "after", "-o", "/dev/null", "--wrap", "true"])
        .unwrap();
    assert_eq!(
        b.wait_accounted(&after, Duration::from_secs(60))
            .unwrap()
            .state,
        "COMPLETED"
    );
}
