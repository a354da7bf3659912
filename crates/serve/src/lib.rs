//! `leo-torch serve CHECKPOINT`: an OpenAI-compatible chat-completions server over leo-llama's
//! generation (docs/serve.md).
//!
//! - `model.rs`: the model on a thread of its own, one generation at a time, in arrival order;
//! - `api.rs`: the routes (axum on tokio), every check before a request is queued, errors in
//!   OpenAI's shape, server-sent events for `stream: true`.
//!
//! Prompts are rendered with the checkpoint's own chat template (leo-chat, as transformers'
//! `apply_chat_template` renders it) and encoded as the sft stage trained on them.

mod api;
mod model;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use leo_chat::ChatTemplate;
use leo_llama::tch::{Device, Kind};
use leo_llama::{Config, Tokenizer};

pub use model::stable_len;

/// The default limit on a request body: generous for chat, small enough that a flood of large
/// bodies cannot exhaust memory.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1 << 20;

/// `leo-torch serve`'s flags (`leo serve` passes the same).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "leo-torch serve",
    about = "Serve a chat model over OpenAI's chat-completions API"
)]
pub struct ServeArgs {
    /// A model folder: config.json, safetensors weights, tokenizer.json and a tokenizer config
    /// with a chat template (the sft stage's output).
    pub checkpoint: PathBuf,
    /// Address to listen on. Loopback by default; anything else is reachable from other
    /// machines and says so.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one (printed as `listening on http://HOST:PORT`).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The model's name in the API (`model` in requests); default: the folder's name.
    #[arg(long)]
    pub model_name: Option<String>,
    /// Weights' dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Largest request body accepted, in bytes (larger: 413).
    #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Require `Authorization: Bearer KEY` on /v1 routes, KEY read from this environment
    /// variable (never from the command line, where other users could see it).
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
}

/// `leo-torch serve ARGS…`: runs until SIGINT/SIGTERM; errors print as one line.
pub fn main(args: &[String]) -> ExitCode {
    let args = match ServeArgs::try_parse_from(
        std::iter::once("leo-torch serve".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging();
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// INFO and above to stderr, without colour codes (the completion lines are read by tests and
/// log collectors); `RUST_LOG` overrides the level.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

pub fn parse_device(text: &str) -> Result<Device> {
    match text {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(Device::Cuda(n)),
            _ => bail!("--device must be cpu, cuda or cuda:N, not `{other}`"),
        },
    }
}

pub fn parse_dtype(text: &str) -> Result<Kind> {
    match text {
        "f32" => Ok(Kind::Float),
        "bf16" => Ok(Kind::BFloat16),
        "f16" => Ok(Kind::Half),
        other => bail!("--dtype must be f32, bf16 or f16, not `{other}`"),
    }
}

/// Loads the checkpoint, binds, prints `listening on http://HOST:PORT` and serves.
pub fn serve(args: ServeArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let kind = parse_dtype(&args.dtype)?;
    if let Device::Cuda(n) = device {
        if n >= leo_llama::tch::Cuda::device_count() as usize {
            bail!(
                "--device {}: this machine has {} CUDA device(s)",
                args.device,
                leo_llama::tch::Cuda::device_count()
            );
        }
    }
    let api_key = match &args.api_key_env {
        Some(var) => match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => Some(key.trim().to_string()),
            _ => bail!("--api-key-env {var}: the environment variable {var} is not set or empty"),
        },
        None => None,
    };
    let dir = args.checkpoint.as_path();
    if !dir.join("config.json").is_file() {
        bail!("{} is not a model folder (no config.json)", dir.display());
    }
    let model_name = match &args.model_name {
        Some(n) => n.clone(),
        None => folder_name(dir)?,
    };
    let template = ChatTemplate::from_dir(dir)?;
    let tokenizer = Arc::new(Tokenizer::from_file(&dir.join("tokenizer.json"))?);
    let stop_tokens = stop_tokens(dir, &template, &tokenizer)?;
    let (queue, info) = model::start(dir.to_path_buf(), device, kind, tokenizer.clone())?;
    let app = Arc::new(api::App {
        model_name: model_name.clone(),
        template,
        tokenizer,
        stop_tokens,
        context: info.context,
        max_request_bytes: args.max_request_bytes,
        api_key,
        queue,
        started: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("binding {}:{}", args.host, args.port))?;
        let addr = listener.local_addr().context("the bound address")?;
        if !is_loopback(&args.host) {
            eprintln!(
                "warning: listening on {addr}, reachable from other machines{}",
                if app.api_key.is_some() {
                    ""
                } else {
                    " by anyone, without a key (see --api-key-env)"
                }
            );
        }
        tracing::info!(
            "serving `{model_name}` from {} (context {} tokens, {} on {:?})",
            args.checkpoint.display(),
            info.context,
            args.dtype,
            device
        );
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on http://{addr}").context("writing to stdout")?;
            out.flush().context("writing to stdout")?;
        }
        axum::serve(listener, api::router(app))
            .with_graceful_shutdown(shutdown())
            .await
            .context("serving")
    })
}

fn folder_name(dir: &Path) -> Result<String> {
    let canonical = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("the checkpoint folder has no name; pass --model-name")
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The tokens that end a completion: the tokenizer config's EOS and the `eos_token_id`s of
/// config.json and generation_config.json (what transformers' `generate` stops at).
fn stop_tokens(dir: &Path, template: &ChatTemplate, tokenizer: &Tokenizer) -> Result<Vec<i64>> {
    let mut ids = Vec::new();
    if let Some(eos) = template.eos_token() {
        match tokenizer.token_to_id(eos) {
            Some(id) => ids.push(i64::from(id)),
            None => bail!(
                "the EOS token {eos:?} of {}'s tokenizer config is not in its tokenizer.json",
                dir.display()
            ),
        }
    }
    ids.extend(Config::from_file(&dir.join("config.json"))?.eos_token_id);
    let generation = dir.join("generation_config.json");
    if generation.is_file() {
        let text = std::fs::read_to_string(&generation)
            .with_context(|| format!("reading {}", generation.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", generation.display()))?;
        match &json["eos_token_id"] {
            serde_json::Value::Number(n) => ids.extend(n.as_i64()),
            serde_json::Value::Array(list) => ids.extend(list.iter().filter_map(|v| v.as_i64())),
            _ => {}
        }
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        bail!(
            "{} names no EOS token (tokenizer_config.json, config.json, generation_config.json): \
             completions could only end at max_tokens",
            dir.display()
        );
    }
    Ok(ids)
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
