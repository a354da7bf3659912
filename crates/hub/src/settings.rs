//! Where the Hub is, who we are, and where the cache lies: read from the same environment
//! variables huggingface_hub reads, so leo and Python share one cache and one login.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything a [`crate::Hub`] needs to know. Tests build it directly; programs use
/// [`HubSettings::from_env`].
#[derive(Clone)]
pub struct HubSettings {
    /// `https://huggingface.co` unless `HF_ENDPOINT` says otherwise; no trailing `/`.
    pub endpoint: String,
    /// A read token (`HF_TOKEN`, else the token file huggingface-cli login writes).
    pub token: Option<String>,
    /// The hub cache: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: PathBuf,
    /// `HF_HUB_OFFLINE`: use the cache only, send nothing.
    pub offline: bool,
    /// Limit for connecting and for each API or metadata request.
    pub api_timeout: Duration,
    /// Limit for one read of a download's body (a stalled transfer is retried, then fails).
    pub read_timeout: Duration,
    /// Retries of a failed transfer within one call (connection errors, 5xx, cuts).
    pub retries: u32,
    /// The first retry's delay; it doubles each time, up to 8 s.
    pub retry_backoff: Duration,
    /// Draw a progress bar per download when stderr is a terminal (else log a line per file).
    pub progress_bars: bool,
}

impl std::fmt::Debug for HubSettings {
    /// Says whether there is a token, never what it is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("api_timeout", &self.api_timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

impl HubSettings {
    pub fn from_env() -> HubSettings {
        HubSettings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Settings from a lookup of environment variables (so tests need not touch the process
    /// environment).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> HubSettings {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let home = var("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        let expand = |p: String| match p.strip_prefix("~/") {
            Some(rest) => home.join(rest),
            None => PathBuf::from(p),
        };
        let hf_home = var("HF_HOME").map(expand).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".cache"))
                .join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .map(expand)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token_file = var("HF_TOKEN_PATH")
            .map(expand)
            .unwrap_or_else(|| hf_home.join("token"));
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| read_token(&token_file));
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v));
        let endpoint = var("HF_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        HubSettings {
            endpoint,
            token,
            cache_dir,
            offline,
            // The revision API lists every file: large dataset repositories answer with
            // megabytes of JSON, so this is no 10 s etag-request limit.
            api_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            retries: 5,
            retry_backoff: Duration::from_millis(500),
            progress_bars: true,
        }
    }
}

fn read_token(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// huggingface_hub's reading of boolean variables.
fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> HubSettings {
        HubSettings::from_lookup(|n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_and_overrides_follow_huggingface_hub() {
        let s = settings(&[("HOME", "/home/u")]);
        assert_eq!(s.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(s.cache_dir, Path::new("/home/u/.cache/huggingface/hub"));
        assert!(!s.offline && s.token.is_none());
        let s = settings(&[
            ("HOME", "/home/u"),
            ("HF_HOME", "/hf"),
            ("HF_HUB_OFFLINE", "1"),
        ]);
        assert_eq!(s.cache_dir, Path::new("/hf/hub"));
        assert!(s.offline);
        let s = settings(&[
            ("HF_HOME", "/hf"),
            ("HF_HUB_CACHE", "/c"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", "hf_x"),
        ]);
        assert_eq!(s.cache_dir, Path::new("/c"));
        assert_eq!(s.endpoint, "http://127.0.0.1:9");
        assert_eq!(s.token.as_deref(), Some("hf_x"));
        assert!(!format!("{s:?}").contains("hf_x"));
    }

    #[test]
    fn the_token_file_is_read_when_hf_token_is_unset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_file\n").unwrap();
        let home = dir.path().to_string_lossy().into_owned();
        let s = settings(&[("HF_HOME", &home)]);
        assert_eq!(s.token.as_deref(), Some("hf_file"));
        let path = dir.path().join("token").to_string_lossy().into_owned();
        let s = settings(&[("HF_TOKEN_PATH", &path), ("HF_HOME", "/nowhere")]);
        assert_eq!(s.token.as_deref(), Some("hf_file"));
    }
}
