//! The HTTP API: OpenAI's `GET /v1/models` and `POST /v1/chat/completions` (plain JSON or
//! server-sent events), `GET /health`, and every refusal as OpenAI's error body.
//!
//! A request is checked completely (size, JSON, fields, model, template, context) before it
//! joins the model's queue, so a bad request costs no model time and gets a 4xx naming what is
//! wrong; nothing a client sends can panic the server.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use leo_chat::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, Choice, ChunkChoice,
    Delta, ErrorBody, ErrorDetail, FinishReason, Model, ModelList, Usage,
};
use leo_chat::{ChatError, ChatTemplate};
use leo_llama::{Finish, GenerateOptions, Tokenizer};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::model::{Event, Job, Outcome, Queue};

/// What every handler shares.
pub struct App {
    pub model_name: String,
    pub template: ChatTemplate,
    pub tokenizer: Arc<Tokenizer>,
    /// Generation ends at these tokens (the EOS of the tokenizer config, config.json and
    /// generation_config.json).
    pub stop_tokens: Vec<i64>,
    pub context: usize,
    pub max_request_bytes: usize,
    /// Required as `Authorization: Bearer KEY` on /v1 routes when set.
    pub api_key: Option<String>,
    pub queue: Queue,
    /// Unix seconds, for `/v1/models`.
    pub started: u64,
}

pub fn router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), authorize));
    Router::new()
        .route("/health", get(health))
        .merge(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

/// A refusal in OpenAI's shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: ErrorDetail,
}

impl ApiError {
    fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: ErrorDetail {
                message: message.into(),
                kind: kind.into(),
                param: None,
                code: None,
            },
        }
    }

    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    fn param(mut self, param: impl Into<String>) -> ApiError {
        self.detail.param = Some(param.into());
        self
    }

    fn code(mut self, code: &str) -> ApiError {
        self.detail.code = Some(code.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.detail };
        (self.status, Json(body)).into_response()
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found_error",
        format!(
            "no route {} {} (this server has GET /v1/models, POST /v1/chat/completions, GET /health)",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Checks the bearer key in constant time (the key itself never reaches a log or a response).
async fn authorize(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes()));
        if !ok {
            let message = if given.is_some() {
                "incorrect API key provided"
            } else {
                "missing API key: send `Authorization: Bearer KEY`"
            };
            return ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
                .code("invalid_api_key")
                .into_response();
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Hashing first makes the comparison independent of where the inputs differ and of length.
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

async fn models(State(app): State<Arc<App>>) -> Json<ModelList> {
    Json(ModelList {
        object: "list".into(),
        data: vec![Model {
            id: app.model_name.clone(),
            object: "model".into(),
            created: app.started,
            owned_by: "leo".into(),
        }],
    })
}

/// A request that passed every check, ready for the model.
struct Checked {
    id: String,
    model: String,
    prompt: Vec<i64>,
    prompt_sha256: String,
    opts: GenerateOptions,
    stream: bool,
    include_usage: bool,
}

async fn chat_completions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let bytes = read_body(&app, &headers, body).await?;
    let checked = check(&app, &bytes)?;
    let (events, mut rx) = mpsc::unbounded_channel();
    app.queue
        .submit(Job {
            prompt: checked.prompt.clone(),
            opts: checked.opts.clone(),
            stream: checked.stream,
            events,
        })
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                e.to_string(),
            )
        })?;
    if checked.stream {
        return Ok(stream(checked, rx, received));
    }
    let outcome = loop {
        match rx.recv().await {
            Some(Event::Text(_)) => {}
            Some(Event::Done(done)) => break done,
            None => break Err("the model thread stopped".to_string()),
        }
    };
    let outcome =
        outcome.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e))?;
    let usage = log_completion(&checked, &outcome, received);
    Ok(Json(ChatCompletion {
        id: checked.id,
        object: "chat.completion".into(),
        created: now(),
        model: checked.model,
        choices: vec![Choice {
            index: 0,
            message: ChatMessage::new("assistant", outcome.text),
            finish_reason: Some(finish_reason(outcome.finish)),
            logprobs: None,
        }],
        usage,
    })
    .into_response())
}

/// The body, refused with 413 beyond the limit (by Content-Length before reading any of it).
async fn read_body(app: &App, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!(
                "the request body is larger than this server's limit of {} bytes (--max-request-bytes)",
                app.max_request_bytes
            ),
        )
        .code("request_too_large")
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_request_bytes as u64) {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, app.max_request_bytes).await {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            let limit = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            if limit {
                Err(too_large())
            } else {
                Err(ApiError::invalid(format!("reading the request body: {e}")))
            }
        }
    }
}

/// Everything about a request that can be wrong, in the order a client would fix it.
fn check(app: &App, bytes: &[u8]) -> Result<Checked, ApiError> {
    let json: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid JSON: {e}")))?;
    let req: ChatCompletionRequest = serde_path_to_error::deserialize(json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        // A missing field is reported at its parent: name the field itself.
        let param = match inner.strip_prefix("missing field `") {
            Some(rest) => {
                let field = rest.split('`').next().unwrap_or_default();
                if path == "." {
                    field.to_string()
                } else {
                    format!("{path}.{field}")
                }
            }
            None => path,
        };
        ApiError::invalid(format!("`{param}`: {inner}")).param(param)
    })?;
    if req.model != app.model_name {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "the model `{}` does not exist; this server serves `{}`",
                req.model, app.model_name
            ),
        )
        .param("model")
        .code("model_not_found"));
    }
    if let Some(n) = req.n.filter(|&n| n != 1) {
        return Err(ApiError::invalid(format!(
            "`n` must be 1 (got {n}): one completion per request"
        ))
        .param("n"));
    }
    if req.messages.is_empty() {
        return Err(ApiError::invalid("`messages` must not be empty").param("messages"));
    }
    let temperature = req.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(format!(
            "`temperature` must be between 0 and 2 (got {temperature})"
        ))
        .param("temperature"));
    }
    let top_p = req.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(
            ApiError::invalid(format!("`top_p` must be in (0, 1] (got {top_p})")).param("top_p"),
        );
    }
    let (max_name, max_tokens) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(m), _) => ("max_completion_tokens", Some(m)),
        (None, m) => ("max_tokens", m),
    };
    if max_tokens == Some(0) {
        return Err(ApiError::invalid(format!("`{max_name}` must be at least 1")).param(max_name));
    }
    let rendered = app
        .template
        .render(&req.messages, true)
        .map_err(|e| match e {
            ChatError::Raised(m) => ApiError::invalid(format!(
                "the model's chat template refuses these messages: {m}"
            ))
            .param("messages"),
            other => ApiError::invalid(other.to_string()).param("messages"),
        })?;
    let add_special = app.template.add_special_tokens(&rendered);
    let prompt: Vec<i64> = app
        .tokenizer
        .encode(&rendered, add_special)
        .map_err(|e| ApiError::invalid(format!("tokenizing the prompt: {e:#}")).param("messages"))?
        .into_iter()
        .map(i64::from)
        .collect();
    let room = app.context.saturating_sub(prompt.len());
    let max_new = match max_tokens {
        Some(m) if m as usize > room => {
            return Err(ApiError::invalid(format!(
                "this model's context is {} tokens; the prompt has {} and `{max_name}` asks for {m} more",
                app.context,
                prompt.len()
            ))
            .param(max_name)
            .code("context_length_exceeded"))
        }
        Some(m) => m as usize,
        None if room == 0 => {
            return Err(ApiError::invalid(format!(
                "this model's context is {} tokens and the prompt alone has {}",
                app.context,
                prompt.len()
            ))
            .param("messages")
            .code("context_length_exceeded"))
        }
        // OpenAI's default: as many as fit.
        None => room,
    };
    let id = completion_id();
    Ok(Checked {
        prompt_sha256: hex::encode(Sha256::digest(rendered.as_bytes()))[..16].to_string(),
        opts: GenerateOptions {
            max_new_tokens: max_new,
            temperature,
            top_p,
            stop_tokens: app.stop_tokens.clone(),
            stop_strings: req
                .stop
                .map(|s| s.into_vec())
                .unwrap_or_default()
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect(),
            seed: req.seed.unwrap_or_else(random_seed),
        },
        stream: req.stream,
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
        model: req.model,
        prompt,
        id,
    })
}

/// The response of a streaming request: the role, the text as it grows, the finish reason (and
/// usage when asked), `[DONE]`. A client that disconnects stops its generation.
fn stream(checked: Checked, mut rx: mpsc::UnboundedReceiver<Event>, received: Instant) -> Response {
    let (tx, body_rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    let created = now();
    tokio::spawn(async move {
        let chunk = |delta: Delta, finish: Option<FinishReason>, usage: Option<Usage>| {
            let c = ChatCompletionChunk {
                id: checked.id.clone(),
                object: "chat.completion.chunk".into(),
                created,
                model: checked.model.clone(),
                choices: if usage.is_some() {
                    Vec::new()
                } else {
                    vec![ChunkChoice {
                        index: 0,
                        delta,
                        finish_reason: finish,
                        logprobs: None,
                    }]
                },
                usage,
            };
            sse(&serde_json::to_string(&c).unwrap_or_default())
        };
        let first = Delta {
            role: Some("assistant".into()),
            content: Some(String::new()),
        };
        if tx.send(Ok(chunk(first, None, None).into())).await.is_err() {
            return;
        }
        loop {
            let event = rx.recv().await;
            let bytes = match event {
                Some(Event::Text(text)) => chunk(
                    Delta {
                        role: None,
                        content: Some(text),
                    },
                    None,
                    None,
                ),
                Some(Event::Done(Ok(outcome))) => {
                    let usage = log_completion(&checked, &outcome, received);
                    let mut out =
                        chunk(Delta::default(), Some(finish_reason(outcome.finish)), None);
                    if checked.include_usage {
                        out.extend_from_slice(&chunk(Delta::default(), None, Some(usage)));
                    }
                    out.extend_from_slice(&sse("[DONE]"));
                    let _ = tx.send(Ok(out.into())).await;
                    return;
                }
                Some(Event::Done(Err(message))) => {
                    let body = ErrorBody {
                        error: ErrorDetail {
                            message,
                            kind: "server_error".into(),
                            param: None,
                            code: None,
                        },
                    };
                    let mut out = sse(&serde_json::to_string(&body).unwrap_or_default());
                    out.extend_from_slice(&sse("[DONE]"));
                    let _ = tx.send(Ok(out.into())).await;
                    return;
                }
                // The model thread is gone; nothing more will come.
                None => return,
            };
            if tx.send(Ok(bytes.into())).await.is_err() {
                // The client went away: dropping `rx` tells the model thread to stop.
                tracing::info!("client went away during {}", checked.id);
                return;
            }
        }
    });
    let stream = futures::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn sse(data: &str) -> Vec<u8> {
    format!("data: {data}\n\n").into_bytes()
}

/// The one INFO line per completed chat completion (tests count these to prove a request was
/// not repeated); returns its usage.
fn log_completion(checked: &Checked, outcome: &Outcome, received: Instant) -> Usage {
    let usage = Usage {
        prompt_tokens: checked.prompt.len() as u32,
        completion_tokens: outcome.completion_tokens as u32,
        total_tokens: (checked.prompt.len() + outcome.completion_tokens) as u32,
    };
    tracing::info!(
        "chat completion id={} prompt_sha256={} prompt_tokens={} completion_tokens={} finish={} ms={}",
        checked.id,
        checked.prompt_sha256,
        usage.prompt_tokens,
        usage.completion_tokens,
        finish_reason(outcome.finish).as_str(),
        received.elapsed().as_millis()
    );
    usage
}

fn finish_reason(finish: Finish) -> FinishReason {
    match finish {
        Finish::Stop => FinishReason::Stop,
        Finish::Length => FinishReason::Length,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Unique per process and request: a hash of the time, the process and a counter.
fn unique_hex() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hex::encode(Sha256::digest(format!(
        "{nanos}:{}:{n}",
        std::process::id()
    )))
}

fn completion_id() -> String {
    format!("chatcmpl-{}", &unique_hex()[..24])
}

/// The seed of a request that names none: different every time, as OpenAI's are.
fn random_seed() -> i64 {
    i64::from_str_radix(&unique_hex()[..15], 16).unwrap_or(0)
}
