//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Run LLM training workflows (the LeoLM recipe and its kin) as resumable, cached DAGs.
#[derive(Parser, Debug)]
#[command(name = "leo", version, about, propagate_version = true)]
pub struct Cli {
    /// State database: a path or sqlite:// URL, or postgres://user@host/db (also $LEO_STATE_URL).
    /// Default: the workflow's [storage] state, else .leo/state.db.
    #[arg(long, global = true, env = "LEO_STATE_URL")]
    pub state: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Plan and run a workflow; prints the run id.
    Run(RunArgs),
    /// Finish a failed, cancelled or killed run: done stages are kept, checkpoints resumed.
    Resume {
        run: String,
        #[command(flatten)]
        machine: MachineArgs,
        /// Print the outcome as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show a run's stages, attempts and cache hits (default: the latest run).
    Status {
        run: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List runs, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Show what would run and what is cached, and for each miss the field that changed; then
    /// what the stages cost (tokens, parameters, FLOPs, GPU-hours, storage) as their plugins
    /// estimate it from the params (docs/workflows.md, "Cost estimate"). Downloads nothing.
    Plan {
        file: PathBuf,
        #[arg(long, env = "LEO_STORE_URL")]
        store: Option<String>,
        #[arg(long)]
        json: bool,
        /// Model FLOPs utilisation for GPU-hours: a fraction (0.45) or a percent (45).
        #[arg(long, default_value_t = 0.45)]
        mfu: f64,
        /// GPU for GPU-hours: a100 (312 TFLOP/s bf16), h100 or h200 (989), b200 (2250), or a
        /// peak in TFLOP/s.
        #[arg(long, default_value = "a100")]
        gpu: String,
        /// Plan every stage for this executor; with `slurm`, also print each stage's sbatch
        /// script (the workflow's and the site profile's options; docs/slurm.md).
        #[arg(long, value_enum)]
        executor: Option<ExecutorArg>,
    },
    /// Check a workflow file and its plugins' params without running anything.
    Validate { file: PathBuf },
    /// Print the stage graph.
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormatArg::Dot)]
        format: GraphFormatArg,
    },
    /// Print the log (stdout and stderr) of a stage's latest attempt.
    Logs {
        /// Run id, or `latest`.
        run: String,
        stage: String,
        /// Attempt number (default: the latest).
        #[arg(long)]
        attempt: Option<u32>,
        /// Include the worker's protocol events (JSON lines).
        #[arg(long)]
        raw: bool,
    },
    /// Re-read every file of an artifact from the store and check its hash.
    Verify {
        /// Artifact digest (`sha256:…`, a unique prefix is enough).
        artifact: String,
        /// The store (default: the latest run's).
        #[arg(long, env = "LEO_STORE_URL")]
        store: Option<String>,
    },
    /// Find (and with --delete remove) store objects that no artifact recorded in the state
    /// needs: manifests of unrecorded artifacts, blobs no recorded manifest lists.
    Gc {
        /// Remove them (default: only report).
        #[arg(long)]
        delete: bool,
        /// Leave objects younger than this alone (uploads in progress).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        min_age: std::time::Duration,
        /// The store (default: the latest run's).
        #[arg(long, env = "LEO_STORE_URL")]
        store: Option<String>,
    },
    /// Trace an artifact back through the stages and inputs that made it.
    Lineage {
        /// Artifact digest (`sha256:…`, a unique prefix is enough).
        artifact: String,
        /// Output: an indented tree, JSON, Graphviz dot, Mermaid, or OpenLineage RunEvents (one
        /// JSON object per line, one per stage attempt).
        #[arg(long, value_enum, default_value = "tree")]
        format: LineageFormat,
        /// Same as `--format json`.
        #[arg(long)]
        json: bool,
        /// Read lineage from the `.leo-artifact.json` records in this store instead of the state
        /// database (the full digest is needed then).
        #[arg(long)]
        from_store: Option<String>,
    },
    /// Export every metric a run's stages reported (all attempts): CSV (stdout or --out) or
    /// TensorBoard event files (one per stage, under --out).
    Metrics {
        /// Run id, or `latest`.
        run: String,
        /// Only this stage's metrics.
        #[arg(long)]
        stage: Option<String>,
        #[arg(long, value_enum, default_value_t = MetricsFormat::Csv)]
        format: MetricsFormat,
        /// The CSV file, or the folder for TensorBoard files (required for them).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a run's report: one self-contained HTML page (stages, loss curves, German vs
    /// English scores, evals, lineage; docs/report.md) and its data as JSON beside it.
    Report {
        /// Run id, a unique prefix of one, or `latest`.
        run: String,
        /// The HTML file (default: `reports/RUN.html` beside the state database).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Serve a chat model (a folder or a run's artifact) over OpenAI's chat-completions API
    /// (runs `leo-torch serve`; docs/serve.md).
    Serve(crate::commands::serve::ServeArgs),
    /// Write a stage for another scheduler: `leo export k8s WORKFLOW STAGE` (a Kubernetes
    /// indexed Job, one pod per rank; docs/kubernetes.md).
    #[command(subcommand)]
    Export(crate::commands::export::ExportCommand),
    /// Run one attempt of a built-in plugin (used by the engine).
    #[command(hide = true)]
    Worker { plugin: String, invocation: PathBuf },
    /// Run one rank of a stage under a cluster's launcher (srun, a Kubernetes indexed Job):
    /// the rank's invocation is made from TEMPLATE and the environment, then COMMAND runs.
    #[command(hide = true)]
    WorkerRank {
        template: PathBuf,
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    pub file: PathBuf,
    /// Artifact store (a folder or file:// URL). Default: the workflow's [storage] artifacts, else .leo/store.
    #[arg(long, env = "LEO_STORE_URL")]
    pub store: Option<String>,
    #[command(flatten)]
    pub machine: MachineArgs,
    /// Run every stage with this executor, whatever the workflow says (docs/slurm.md).
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorArg>,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorArg {
    /// Processes on this machine.
    Local,
    /// One Slurm job per attempt.
    Slurm,
}

impl From<ExecutorArg> for leo_spec::Executor {
    fn from(e: ExecutorArg) -> Self {
        match e {
            ExecutorArg::Local => leo_spec::Executor::Local,
            ExecutorArg::Slurm => leo_spec::Executor::Slurm,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct MachineArgs {
    /// CPUs stages may use together (default: all).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// GPUs stages may use (default: CUDA_VISIBLE_DEVICES, else all the driver reports).
    #[arg(long)]
    pub gpus: Option<u32>,
    /// Seconds a stage gets to stop after SIGTERM before it is killed.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub grace: f64,
    /// First retry delay in seconds (doubles per retry, with jitter).
    #[arg(long, default_value_t = 1.0, env = "LEO_RETRY_DELAY", value_parser = seconds)]
    pub retry_delay: f64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineageFormat {
    Tree,
    Json,
    Dot,
    Mermaid,
    Openlineage,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsFormat {
    /// `stage,attempt,step,name,value,time_ms`.
    Csv,
    /// `OUT/STAGE/events.out.tfevents.*`, for `tensorboard --logdir OUT`.
    Tensorboard,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum GraphFormatArg {
    Dot,
    Mermaid,
}

/// A number of seconds between 0 and one day.
fn seconds(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&v) {
        return Err(format!("{text} s is out of range (0 to 86400)"));
    }
    Ok(v)
}
