//! A blocking client for OpenAI-compatible `/chat/completions` endpoints, with the retry policy
//! a long judging run needs: rate limits (429), server errors (5xx) and lost connections are
//! retried with exponential backoff and jitter, honouring `Retry-After`; any other 4xx (a wrong
//! key, a wrong model name) fails at once with the server's message, since retrying cannot fix
//! it. The API key is sent as a bearer token and removed from every message this module makes,
//! including the server's own (some providers echo a key they refuse).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::json;

use crate::judge::Message;

/// An API key that prints as `***`.
#[derive(Clone)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl ApiKey {
    /// The key from the environment variable `name`; an error names the variable only.
    pub fn from_env(name: &str) -> Result<ApiKey> {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Ok(ApiKey(v.trim().to_string())),
            Ok(_) => bail!("judge.api_key_env: the environment variable {name} is empty"),
            Err(_) => bail!(
                "judge.api_key_env: the environment variable {name} is not set (give it to the stage with env = {{ {name} = \"${{secret.{name}}}\" }})"
            ),
        }
    }

    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }
}

/// How failed requests are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub max_retries: u32,
    /// The first backoff; each later one doubles, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured as it is (longer ones are cut to this).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry `n` (0-based): the server's `Retry-After` when it sent one, else
    /// `base · 2^n` (capped) with "equal jitter" — half fixed, half uniform — so that many
    /// clients throttled together do not come back together. `unit` is uniform in [0, 1).
    pub fn delay(&self, n: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_retry_after);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        exp.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

/// The judge's reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub content: String,
    pub finish_reason: Option<String>,
    /// Tries it took (1 = no retry).
    pub tries: u32,
}

/// Why one try failed, and whether another may succeed.
enum Failure {
    Retry {
        why: String,
        retry_after: Option<Duration>,
    },
    Fatal(String),
}

pub struct ChatClient {
    http: reqwest::blocking::Client,
    url: String,
    model: String,
    key: Option<ApiKey>,
    max_tokens: u32,
    pub policy: RetryPolicy,
    /// Waits between tries; a test replaces it to see the waits without waiting.
    pub sleep: Box<dyn Fn(Duration) + Send + Sync>,
    rng: std::cell::Cell<u64>,
}

impl ChatClient {
    pub fn new(
        base_url: &str,
        model: &str,
        key: Option<ApiKey>,
        max_tokens: u32,
        timeout: Duration,
        policy: RetryPolicy,
    ) -> Result<ChatClient> {
        let http = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(30)))
            .user_agent(concat!("leo-mtbench/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        Ok(ChatClient {
            http,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            model: model.to_string(),
            key,
            max_tokens,
            policy,
            sleep: Box::new(std::thread::sleep),
            rng: std::cell::Cell::new(seed),
        })
    }

    /// Asks for one completion of `messages` at temperature 0, retrying per the policy.
    pub fn complete(&self, messages: &[Message]) -> Result<Completion> {
        let body = json!({
            "model": self.model,
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
            "n": 1,
        });
        let mut n = 0;
        loop {
            match self.try_once(&body) {
                Ok((content, finish_reason)) => {
                    return Ok(Completion {
                        content,
                        finish_reason,
                        tries: n + 1,
                    })
                }
                Err(Failure::Fatal(msg)) => bail!("{}", self.redact(&msg)),
                Err(Failure::Retry { why, retry_after }) => {
                    if n >= self.policy.max_retries {
                        bail!("{} (gave up after {} tries)", self.redact(&why), n + 1);
                    }
                    let wait = self.policy.delay(n, retry_after, self.uniform());
                    eprintln!(
                        "judge: {}; retry {} of {} in {:.1} s",
                        self.redact(&why),
                        n + 1,
                        self.policy.max_retries,
                        wait.as_secs_f64()
                    );
                    (self.sleep)(wait);
                    n += 1;
                }
            }
        }
    }

    fn try_once(&self, body: &serde_json::Value) -> Result<(String, Option<String>), Failure> {
        let mut req = self.http.post(&self.url).json(body);
        if let Some(key) = &self.key {
            req = req.bearer_auth(&key.0);
        }
        let resp = match req.send() {
            Ok(r) => r,
            Err(e) => {
                let why = format!("POST {}: {}", self.url, error_chain(&e));
                return Err(
                    if e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() {
                        Failure::Retry {
                            why,
                            retry_after: None,
                        }
                    } else {
                        Failure::Fatal(why)
                    },
                );
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = match resp.text() {
            Ok(t) => t,
            Err(e) => {
                return Err(Failure::Retry {
                    why: format!(
                        "POST {}: reading the response: {}",
                        self.url,
                        error_chain(&e)
                    ),
                    retry_after: None,
                })
            }
        };
        if status.is_success() {
            return parse_completion(&text).map_err(|e| {
                Failure::Fatal(format!(
                    "POST {}: {status} but the body is not a chat completion ({e}): {}",
                    self.url,
                    clip(&text)
                ))
            });
        }
        let why = format!(
            "POST {}: {status}: {}",
            self.url,
            server_message(&text).unwrap_or_else(|| clip(&text))
        );
        if status.as_u16() == 429 || status.is_server_error() {
            Err(Failure::Retry { why, retry_after })
        } else {
            Err(Failure::Fatal(why))
        }
    }

    /// The message with the key (and any long piece of it) replaced by `***`.
    fn redact(&self, msg: &str) -> String {
        match &self.key {
            Some(k) if !k.0.is_empty() => redact_key(msg, &k.0),
            _ => msg.to_string(),
        }
    }

    /// SplitMix64 (the same generator as sampling uses); jitter needs no quality beyond this.
    fn uniform(&self) -> f64 {
        let mut s = self.rng.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.rng.set(s);
        s = (s ^ (s >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        s = (s ^ (s >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        s ^= s >> 31;
        (s >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Replaces the key and any 8-character piece of it (providers echo keys shortened, e.g.
/// `sk-abc...wxyz`) by `***`.
pub fn redact_key(msg: &str, key: &str) -> String {
    let mut out = msg.replace(key, "***");
    let chars: Vec<char> = key.chars().collect();
    if chars.len() >= 12 {
        for w in chars.windows(8) {
            let piece: String = w.iter().collect();
            if out.contains(&piece) {
                out = out.replace(&piece, "***");
            }
        }
    }
    out
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// `Retry-After` in seconds (what rate limiters send); an HTTP date is not worth a date parser
/// here and falls back to the backoff.
fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

fn parse_completion(text: &str) -> Result<(String, Option<String>)> {
    #[derive(Deserialize)]
    struct Resp {
        choices: Vec<Choice>,
    }
    #[derive(Deserialize)]
    struct Choice {
        message: Msg,
        #[serde(default)]
        finish_reason: Option<String>,
    }
    #[derive(Deserialize)]
    struct Msg {
        #[serde(default)]
        content: Option<String>,
    }
    let r: Resp = serde_json::from_str(text)?;
    let c = r.choices.into_iter().next().context("no choices")?;
    Ok((c.message.content.unwrap_or_default(), c.finish_reason))
}

/// OpenAI's error layout `{"error": {"message": …}}`, or a plain `{"message"}`/`{"detail"}`.
fn server_message(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let m = v
        .pointer("/error/message")
        .or_else(|| v.get("error").filter(|e| e.is_string()))
        .or_else(|| v.get("message"))
        .or_else(|| v.get("detail"))?;
    Some(m.as_str().map_or_else(|| m.to_string(), str::to_string))
}

fn clip(text: &str) -> String {
    const MAX: usize = 500;
    if text.len() <= MAX {
        return text.trim().to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", text[..end].trim())
}
