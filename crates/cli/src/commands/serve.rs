//! `leo serve CHECKPOINT`: serves a chat model over OpenAI's API by running
//! `leo-torch serve` (docs/serve.md). `leo` itself never links libtorch: it only resolves
//! CHECKPOINT (a folder, or an artifact of a run, fetched from that run's store) and hands over.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use leo_state::State;
use leo_store::ArtifactStore;

use super::lineage::resolve;
use super::{short_digest, state_location, work_root, DEFAULT_STORE};

/// The flags `leo-torch serve` takes, passed through as given (it checks them).
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// A model folder, or an artifact digest (`sha256:…`, a unique prefix is enough) of a run's
    /// output, e.g. the sft stage's `model`.
    pub checkpoint: String,
    /// Address to listen on (loopback by default; anything else prints a warning).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port; 0 picks a free one (printed as `listening on http://HOST:PORT`).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The model's name in the API; default: the folder's name, or the artifact's short digest.
    #[arg(long)]
    pub model_name: Option<String>,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_request_bytes: usize,
    /// Require `Authorization: Bearer KEY`, KEY read from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
}

pub async fn serve(state_flag: Option<String>, args: ServeArgs) -> Result<ExitCode> {
    let exe = leo_torch()?;
    let (folder, default_name) = if Path::new(&args.checkpoint).is_dir() {
        (PathBuf::from(&args.checkpoint), None)
    } else if args.checkpoint.contains('/') {
        bail!("{} is not a folder", args.checkpoint);
    } else {
        let (folder, digest) = fetch(state_flag, &args.checkpoint).await?;
        (folder, Some(short_digest(&digest)))
    };
    let mut argv: Vec<OsString> = vec![
        "serve".into(),
        folder.into_os_string(),
        "--host".into(),
        args.host.into(),
        "--port".into(),
        args.port.to_string().into(),
        "--dtype".into(),
        args.dtype.into(),
        "--device".into(),
        args.device.into(),
        "--max-request-bytes".into(),
        args.max_request_bytes.to_string().into(),
    ];
    if let Some(name) = args.model_name.or(default_name) {
        argv.extend(["--model-name".into(), name.into()]);
    }
    if let Some(var) = args.api_key_env {
        argv.extend(["--api-key-env".into(), var.into()]);
    }
    // exec: leo-torch becomes this process, so signals (Ctrl-C, SIGTERM) and the exit code are
    // its own, with no supervisor in between.
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&exe).args(&argv).exec();
    bail!("starting {}: {err}", exe.display())
}

/// `leo-torch`, as the engine's catalog finds it: beside `leo`, then on PATH.
fn leo_torch() -> Result<PathBuf> {
    let leo = std::env::current_exe().context("locating the leo executable")?;
    let beside = leo.with_file_name("leo-torch");
    if is_executable(&beside) {
        return Ok(beside);
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("leo-torch"))
            .find(|p| is_executable(p))
    }) {
        return Ok(found);
    }
    bail!(
        "`leo serve` runs `leo-torch serve`, and leo-torch is not beside {} nor on PATH; build \
         it with `cargo build -p leo-torch` (needs libtorch: tools/torch-env.sh)",
        leo.display()
    )
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The artifact's files in a local folder (`.leo/models/<hex>`, shared and read-only: hard links
/// into a local store, a verified download from a remote one), fetched from the store of the
/// run that produced it.
async fn fetch(state_flag: Option<String>, text: &str) -> Result<(PathBuf, String)> {
    let location = state_location(state_flag, None);
    let state = State::open_existing(&location).await.with_context(|| {
        format!("`{text}` is not a folder, so it names an artifact; opening the state database")
    })?;
    let digest = resolve(&state, text).await?;
    let run = match state.producer(&digest).await? {
        Some((attempt, _, _)) => state.get_run(&attempt.run_id).await?,
        None => state.latest_run(None).await?,
    };
    let url = run.map_or_else(|| DEFAULT_STORE.to_string(), |r| r.store_url);
    let store = ArtifactStore::open(&url)?;
    let cache = work_root(&location).with_file_name("models");
    let folder = store
        .materialise_shared(&digest, &cache)
        .await
        .with_context(|| format!("fetching {digest} from {}", store.url()))?;
    eprintln!("serving artifact {digest} from {}", folder.display());
    Ok((folder, digest))
}
