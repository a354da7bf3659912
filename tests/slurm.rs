//! The Slurm executor against real Slurm daemons (slurmctld, slurmd, slurmdbd, munge and a
//! MariaDB for accounting, started on loopback by `leo_testkit::SlurmCluster` for each test):
//! a workflow's stages run as jobs that `sacct` knows and `leo status` names; two ranks in one
//! job (`srun -n 2`) train what the local executor trains; a job cancelled under a training
//! stage (as a preemption would) is resubmitted and resumes with the same losses; Ctrl-C
//! cancels the jobs and leaves the queue empty.
//!
//! Slurm's world is a team's: these tests run in the team pass (PostgreSQL state, S3
//! artifacts), where every node would see the state and the store.

use std::process::Command;
use std::time::{Duration, Instant};

use leo_e2e::*;
use leo_testkit::SlurmCluster;

/// A team sandbox and a Slurm cluster, or `None` in the local pass (or, outside CI, without
/// Slurm installed).
fn setup() -> Option<(Sandbox, SlurmCluster)> {
    let sb = Sandbox::team_pass_only()?;
    if !SlurmCluster::available() {
        assert!(
            !leo_testkit::in_ci(),
            "Slurm is not installed (slurmctld, slurmd, slurmdbd, munge, mariadb): .ci/run installs it"
        );
        eprintln!("Slurm is not installed here; skipping");
        return None;
    }
    let cluster = SlurmCluster::start().expect("a Slurm cluster on localhost");
    Some((sb, cluster))
}

/// `leo` in the sandbox, talking to the cluster, polling it every second.
fn leo(sb: &Sandbox, cluster: &SlurmCluster, args: &[&str]) -> Command {
    let mut c = sb.cmd(args);
    c.envs(cluster.env());
    let profile = sb.write(
        "slurm.toml",
        "poll_interval = \"1s\"\nheartbeat_timeout = \"2m\"\n",
    );
    c.env("LEO_SLURM_PROFILE", profile);
    c
}

/// `leo` started in the background, its stderr in `run.stderr` in the sandbox.
fn spawn_leo(sb: &Sandbox, cluster: &SlurmCluster, args: &[&str]) -> std::process::Child {
    leo(sb, cluster, args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(sb.path().join("run.stderr")).expect("log"))
        .spawn()
        .expect("leo run")
}

fn leo_ok(sb: &Sandbox, cluster: &SlurmCluster, args: &[&str]) -> String {
    let out = leo(sb, cluster, args).output().expect("run leo");
    if !out.status.success() {
        panic!(
            "leo {args:?} failed ({}):\nstdout: {}\nstderr: {}\nSlurm's logs:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            cluster.log_tail(40)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Slurm job ids of a stage's attempts, in attempt order.
fn job_ids(status: &serde_json::Value, stage_name: &str) -> Vec<String> {
    stage(status, stage_name)["attempt_list"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            a["job_id"]
                .as_str()
                .and_then(|j| j.strip_prefix("slurm:"))
                .unwrap_or_else(|| panic!("attempt without a Slurm job: {a}"))
                .to_string()
        })
        .collect()
}

#[test]
fn a_workflow_runs_as_slurm_jobs_that_sacct_and_leo_status_show() {
    let Some((sb, cluster)) = setup() else {
        return;
    };
    sb.write(
        "wf.toml",
        r#"
[workflow]
name = "on-slurm"
executor = "slurm"

[slurm]
time = "10m"

[stages.greet]
plugin = "shell"
params = { outputs = ["out"], run = "echo \"hello from $(hostname) as task $SLURM_PROCID of job $SLURM_JOB_ID\" > $LEO_OUTPUT_OUT/greeting.txt" }

[stages.shout]
plugin = "shell"
inputs = { greeting = "greet.out" }
params = { outputs = ["out"], run = "tr a-z A-Z < $LEO_INPUT_GREETING/greeting.txt > $LEO_OUTPUT_OUT/loud.txt && cat $LEO_OUTPUT_OUT/loud.txt" }
"#,
    );
    leo_ok(&sb, &cluster, &["run", "wf.toml"]);
    let status = sb.status(None);
    assert_eq!(status["run"]["status"], "succeeded", "{status}");

    // Each stage ran as one job of its own, recorded with its attempt.
    let greet = job_ids(&status, "greet");
    let shout = job_ids(&status, "shout");
    assert_eq!((greet.len(), shout.len()), (1, 1), "{status}");
    assert_ne!(greet, shout);
    // The job really ran the stage: the output names the job.
    let files = artifact_files(&sb, &output_digest(&status, "greet", "out"));
    let greeting = files["greeting.txt"].as_str().expect("greeting.txt");
    assert!(
        greeting.contains(&format!("task 0 of job {}", greet[0])),
        "{greeting}"
    );
    let log = sb.leo_ok(&["logs", "latest", "shout"]);
    assert!(log.contains("HELLO FROM"), "{log}");

    // Slurm's accounting has both jobs, completed.
    for id in greet.iter().chain(&shout) {
        let job = cluster
            .wait_accounted(id, Duration::from_secs(60))
            .expect("the job in sacct");
        assert_eq!(job.state, "COMPLETED", "{job:?}");
        assert_eq!(job.exit_code, "0:0", "{job:?}");
        assert!(job.name.starts_with("leo."), "{job:?}");
    }
    // `leo status` names the jobs.
    let text = sb.leo_ok(&["status"]);
    assert!(
        text.contains(&format!("jobs: slurm:{} (attempt 1, succeeded)", greet[0])),
        "{text}"
    );
    assert!(cluster.queued_jobs().expect("squeue").is_empty());
}

/// The training tests' workflow (tests/support) with the pretrain stage on `executor`; the
/// tokenize stage stays local.
fn training(sb: &Sandbox, executor: &str, resources: &str, params: &str) {
    training_workflow(sb, params, resources, &format!("executor = \"{executor}\""));
}

#[test]
fn two_ranks_in_one_slurm_job_train_what_the_local_executor_trains() {
    let Some((sb, cluster)) = setup() else {
        return;
    };
    let params = "micro_batch = 2, global_batch = 4, steps = 12, lr = 3e-3, warmup_steps = 2, checkpoint_every = 6";
    let local = Sandbox::team();
    training(&local, "local", "cpus = 2, world_size = 2", params);
    local.leo_ok(&["run", "train.toml"]);
    let local_status = local.status(None);
    assert_eq!(local_status["run"]["status"], "succeeded");

    training(&sb, "slurm", "cpus = 2, world_size = 2", params);
    leo_ok(&sb, &cluster, &["run", "train.toml"]);
    let status = sb.status(None);
    assert_eq!(status["run"]["status"], "succeeded", "{status}");
    let jobs = job_ids(&status, "pretrain");
    assert_eq!(jobs.len(), 1);
    // One job whose step ran two tasks, and the trainer saw two ranks.
    let log = sb.leo_ok(&["logs", "latest", "pretrain"]);
    assert!(log.contains("on 2 rank(s)"), "{log}");
    let job = cluster
        .wait_accounted(&jobs[0], Duration::from_secs(60))
        .expect("sacct");
    assert_eq!(job.state, "COMPLETED", "{job:?}");
    let out = cluster
        .client("sacct")
        .args(["-j", &jobs[0], "-n", "-P", "-o", "JobID,NTasks"])
        .output()
        .expect("sacct");
    let steps = String::from_utf8_lossy(&out.stdout);
    assert!(
        steps.lines().any(|l| l == format!("{}.0|2", jobs[0])),
        "step 0 of job {} should have run 2 tasks: {steps}",
        jobs[0]
    );

    assert_eq!(
        pretrain_losses(&sb, &sb.latest_run()),
        pretrain_losses(&local, &local.latest_run()),
        "the Slurm job's losses differ from the local executor's"
    );
    assert_eq!(
        output_digest(&status, "pretrain", "model"),
        output_digest(&local_status, "pretrain", "model"),
        "the Slurm job's model differs from the local executor's"
    );
}

#[test]
fn a_cancelled_training_job_is_resubmitted_and_resumes_with_identical_losses() {
    let Some((sb, cluster)) = setup() else {
        return;
    };
    let params = "micro_batch = 2, global_batch = 4, steps = 100, lr = 3e-3, min_lr = 3e-4, warmup_steps = 10, checkpoint_every = 10";
    let reference = Sandbox::team();
    training(&reference, "local", "cpus = 1", params);
    reference.leo_ok(&["run", "train.toml"]);
    let expected = pretrain_losses(&reference, &reference.latest_run());
    assert_eq!(expected.len(), 100);

    // No `retries`: an interruption must not need one.
    training(&sb, "slurm", "cpus = 1", params);
    let mut run = spawn_leo(&sb, &cluster, &["run", "train.toml"]);
    wait_until(
        "the pretrain job's second checkpoint",
        Duration::from_secs(300),
        || {
            sb.leo(&["status", "--json"]).status.success()
                && stage(&sb.status(None), "pretrain")["checkpoints"]
                    .as_array()
                    .is_some_and(|c| c.len() >= 2)
        },
    );
    let first = job_ids(&sb.status(None), "pretrain");
    assert_eq!(first.len(), 1);
    // What a preemption looks like from outside: the job is cancelled by someone else.
    let out = Command::new("scancel")
        .arg(&first[0])
        .envs(cluster.env())
        .output()
        .expect("scancel");
    assert!(out.status.success(), "{out:?}");
    let done = run.wait().expect("leo run");
    let stderr = std::fs::read_to_string(sb.path().join("run.stderr")).unwrap_or_default();
    assert!(
        done.success(),
        "leo run failed: {stderr}\n{}",
        cluster.log_tail(40)
    );
    assert!(stderr.contains("retrying"), "{stderr}");

    let run_id = sb.latest_run();
    let status = sb.status(Some(&run_id));
    assert_eq!(status["run"]["status"], "succeeded", "{status}");
    let jobs = job_ids(&status, "pretrain");
    assert_eq!(jobs.len(), 2, "one resubmission: {status}");
    assert_eq!(jobs[0], first[0]);
    let attempts = stage(&status, "pretrain")["attempt_list"]
        .as_array()
        .expect("attempts")
        .clone();
    let why = attempts[0]["error"].as_str().unwrap_or_default();
    assert!(why.contains("CANCELLED"), "{why}");
    // Slurm's SIGTERM reached the trainer, which saved its step before the job ended (its
    // `leo worker-rank` outlived the signal, so Slurm did not kill the step early).
    let first_log = sb.leo_ok(&["logs", &run_id, "pretrain", "--attempt", "1"]);
    assert!(
        first_log.contains("stopped by SIGTERM; checkpoint saved at step"),
        "{first_log}"
    );
    let second = sb.leo_ok(&["logs", &run_id, "pretrain", "--attempt", "2"]);
    assert!(second.contains("resuming from"), "{second}");
    assert_eq!(pretrain_losses(&sb, &run_id), expected);
    assert_eq!(
        output_digest(&status, "pretrain", "model"),
        output_digest(&reference.status(None), "pretrain", "model"),
    );
    assert_eq!(
        cluster
            .wait_accounted(&jobs[0], Duration::from_secs(60))
            .expect("sacct")
            .state,
        "CANCELLED"
    );
}

#[test]
fn ctrl_c_cancels_the_slurm_jobs_and_leaves_the_queue_empty() {
    let Some((sb, cluster)) = setup() else {
        return;
    };
    sb.write(
        "wf.toml",
        r#"
[workflow]
name = "long"
executor = "slurm"

[stages.a]
plugin = "shell"
params = { run = "echo started; sleep 600" }

[stages.b]
plugin = "shell"
params = { run = "echo started; sleep 600" }
"#,
    );
    let mut run = spawn_leo(&sb, &cluster, &["run", "wf.toml"]);
    wait_until(
        "both stages' jobs running",
        Duration::from_secs(120),
        || {
            sb.leo(&["status", "--json"]).status.success() && {
                let s = sb.status(None);
                ["a", "b"].iter().all(|n| {
                    stage(&s, n)["attempt_list"]
                        .as_array()
                        .is_some_and(|a| !a.is_empty() && a[0]["job_id"].is_string())
                })
            }
        },
    );
    let jobs: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|n| job_ids(&sb.status(None), n))
        .collect();
    let queued = cluster.queued_jobs().expect("squeue");
    for j in &jobs {
        assert!(queued.contains(j), "job {j} not in squeue {queued:?}");
    }
    // Ctrl-C.
    // SAFETY: signalling the leo process this test started.
    unsafe {
        libc::kill(run.id() as i32, libc::SIGINT);
    }
    let started = Instant::now();
    let done = run.wait().expect("leo run");
    assert_eq!(done.code(), Some(130), "{done:?}");
    // leo returned only once Slurm reported the jobs over: nothing is left queued.
    assert_eq!(cluster.queued_jobs().expect("squeue"), Vec::<String>::new());
    assert!(started.elapsed() < Duration::from_secs(120));
    for j in &jobs {
        let job = cluster
            .wait_accounted(j, Duration::from_secs(60))
            .expect("sacct");
        assert_eq!(job.state, "CANCELLED", "{job:?}");
    }
    let status = sb.status(None);
    assert_eq!(status["run"]["status"], "cancelled", "{status}");
}

/// `leo plan --executor slurm` of the 13B workflow prints the sbatch script of every stage;
/// the golden file holds them (with this machine's paths replaced). `UPDATE_GOLDEN=1`
/// rewrites it after a deliberate change.
#[test]
fn the_13b_workflows_sbatch_scripts_request_what_the_workflow_states() {
    let Some(sb) = Sandbox::local_pass_only() else {
        return;
    };
    let profile = sb.write(
        "slurm.toml",
        "partition = \"booster\"\naccount = \"laion\"\nqos = \"normal\"\nextra = [\"--exclusive\"]\n\
         leo = \"/opt/leo/bin/leo\"\n",
    );
    let out = sb
        .cmd(&[
            "plan",
            repo_root()
                .join("workflows/leolm-13b.toml")
                .to_str()
                .expect("path"),
            "--executor",
            "slurm",
        ])
        .env("LEO_SLURM_PROFILE", &profile)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HF_HOME", sb.path().join("hf-home"))
        .env_remove("HF_TOKEN")
        .output()
        .expect("leo plan");
    let text = succeeded(&["plan"], out);
    let scripts = text
        .split_once("\nSlurm jobs (")
        .map(|(_, s)| format!("Slurm jobs ({s}"))
        .expect("a Slurm section in the plan");
    // The profile's `leo` is where leo and leo-torch are on the nodes; only the sandbox's
    // folder differs from machine to machine.
    let scripts = scripts
        .replace(&profile.display().to_string(), "<profile>")
        .replace(&sb.path().display().to_string(), "<dir>");
    let golden = repo_root().join("tests/golden/leolm-13b.sbatch");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().expect("dir")).expect("mkdir");
        std::fs::write(&golden, &scripts).expect("write golden");
    }
    let expected = std::fs::read_to_string(&golden)
        .expect("tests/golden/leolm-13b.sbatch (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(
        scripts, expected,
        "the 13B sbatch scripts changed; if on purpose, rerun with UPDATE_GOLDEN=1 and review the diff"
    );
    // What the workflow states, independent of the golden file: stage 2 pretraining asks
    // for one node of 8 GPUs, 8 ranks of 8 CPUs, 512 GiB and its 70-day timeout.
    let pretrain = scripts
        .split("# ── stage ")
        .find(|s| s.starts_with("pretrain "))
        .expect("the pretrain script");
    for line in [
        "#SBATCH --partition=booster\n",
        "#SBATCH --account=laion\n",
        "#SBATCH --time=70-00:00:00\n",
        "#SBATCH --nodes=1\n",
        "#SBATCH --ntasks-per-node=8\n",
        "#SBATCH --gpus-per-node=8\n",
        "#SBATCH --cpus-per-task=8\n",
        "#SBATCH --mem=524288M\n",
        "#SBATCH --exclusive\n",
        "/opt/leo/bin/leo worker-rank <dir>/.leo/work/RUN/pretrain.1/invocation.json -- /opt/leo/bin/leo-torch worker pretrain\n",
    ] {
        assert!(pretrain.contains(line), "{line:?} missing in\n{pretrain}");
    }
}

#[test]
fn a_stage_timeout_cancels_its_job() {
    let Some((sb, cluster)) = setup() else {
        return;
    };
    sb.write(
        "wf.toml",
        r#"
[workflow]
name = "slow"
executor = "slurm"

[stages.slow]
plugin = "shell"
timeout = "3s"
params = { run = "echo started; sleep 600" }
"#,
    );
    let out = leo(&sb, &cluster, &["run", "wf.toml"])
        .output()
        .expect("leo run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let status = sb.status(None);
    let attempt = &stage(&status, "slow")["attempt_list"][0];
    assert_eq!(attempt["status"], "timed_out", "{status}");
    let job = job_ids(&status, "slow").remove(0);
    assert!(cluster.queued_jobs().expect("squeue").is_empty());
    let accounted = cluster
        .wait_accounted(&job, Duration::from_secs(60))
        .expect("sacct");
    assert_eq!(accounted.state, "CANCELLED", "{accounted:?}");
}

#[test]
fn resume_after_a_killed_engine_cancels_its_old_job_and_resubmits() {
    let Some((sb, cluster)) = setup() else {
        return;
    };
    let fast = sb.path().join("fast");
    sb.write(
        "wf.toml",
        format!(
            r#"
[workflow]
name = "orphan"
executor = "slurm"

[stages.wait]
plugin = "shell"
params = {{ outputs = ["out"], run = "if [ -e {fast} ]; then echo quick > $LEO_OUTPUT_OUT/x; else sleep 600; fi" }}
"#,
            fast = fast.display()
        ),
    );
    let mut run = spawn_leo(&sb, &cluster, &["run", "wf.toml"]);
    wait_until("the stage's job queued", Duration::from_secs(120), || {
        sb.leo(&["status", "--json"]).status.success()
            && stage(&sb.status(None), "wait")["attempt_list"][0]["job_id"].is_string()
    });
    let old = job_ids(&sb.status(None), "wait").remove(0);
    sigkill(&mut run);
    // The engine is gone; its job is not.
    assert!(cluster.queued_jobs().expect("squeue").contains(&old));

    std::fs::write(&fast, "").expect("flag");
    let run_id = sb.latest_run();
    leo_ok(&sb, &cluster, &["resume", &run_id]);
    let status = sb.status(Some(&run_id));
    assert_eq!(status["run"]["status"], "succeeded", "{status}");
    let jobs = job_ids(&status, "wait");
    assert_eq!(jobs.len(), 2, "{status}");
    assert_eq!(jobs[0], old);
    assert!(cluster.queued_jobs().expect("squeue").is_empty());
    let accounted = cluster
        .wait_accounted(&old, Duration::from_secs(60))
        .expect("sacct");
    assert_eq!(accounted.state, "CANCELLED", "{accounted:?}");
}
