//! `leo-torch serve` and `leo serve` over real HTTP: a tiny random chat model saved by
//! transformers (Llama-2's tokenizer with ChatML's tokens, LeoLM's chat template) answers
//! greedy chat completions with exactly the text transformers' greedy `generate` produces from
//! `apply_chat_template(messages, add_generation_prompt=True)`, streams the same text, honours
//! stop strings and seeds, refuses every malformed request with its status and an OpenAI error
//! body, and logs one line per completion. `leo serve` serves a run's output by digest.
//!
//! Needs `leo` and `leo-torch` (`cargo build -p leo-cli -p leo-torch`), ../shared/data and the
//! venv of tools/torch-env.sh (`LEO_TORCH_PYTHON`); without the last two the tests are skipped
//! on a workstation and fail in CI (`CI=true`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use leo_e2e::*;
use serde_json::{json, Value};

const KEY_VAR: &str = "LEO_SERVE_TEST_KEY";
const KEY: &str = "sk-serve-e2e-51c2e0a9d4";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// ../shared/data's Llama-2 tokenizer and the torch venv's python, or `None` (skipped) outside CI.
fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    let tokenizer = repo_root().join("../shared/data/llama2-tokenizer/tokenizer.json");
    let python = std::env::var_os("LEO_TORCH_PYTHON").map(PathBuf::from);
    let missing = if !tokenizer.is_file() {
        format!("{} is missing", tokenizer.display())
    } else if !python.as_deref().is_some_and(Path::is_file) {
        "LEO_TORCH_PYTHON is not set or not a file: `eval \"$(tools/torch-env.sh)\"`".to_string()
    } else {
        return Some((tokenizer, python.unwrap_or_default()));
    };
    assert!(!in_ci(), "CI=true and {missing}");
    eprintln!("skipped: {missing}");
    None
}

fn leo_torch() -> PathBuf {
    let exe = leo_bin().with_file_name("leo-torch");
    assert!(
        exe.exists(),
        "{} is missing: build it first (cargo build -p leo-torch)",
        exe.display()
    );
    exe
}

fn script() -> PathBuf {
    repo_root().join("tests/serve/tiny_chat_model.py")
}

/// The tiny chat model in `dir`, made by transformers.
fn make_model(python: &Path, tokenizer: &Path, dir: &Path) {
    let out = Command::new(python)
        .arg(script())
        .arg("make")
        .arg(dir)
        .arg(tokenizer)
        .output()
        .expect("run tiny_chat_model.py make");
    assert!(
        out.status.success(),
        "making the model failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// transformers' greedy completions of `requests` (`[{messages, max_new_tokens}]`).
fn reference(python: &Path, dir: &Path, requests: &Value) -> Vec<Value> {
    let file = dir.with_extension("requests.json");
    std::fs::write(&file, requests.to_string()).expect("write requests");
    let out = Command::new(python)
        .arg(script())
        .arg("generate")
        .arg(dir)
        .arg(&file)
        .output()
        .expect("run tiny_chat_model.py generate");
    assert!(
        out.status.success(),
        "transformers' generate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reference JSON")
}

/// A running server: its address once it printed `listening on http://HOST:PORT`.
struct Server {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Server {
    fn start(mut cmd: Command, log: PathBuf) -> Server {
        let err = std::fs::File::create(&log).expect("log file");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("start the server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        // Blocks until the server says where it listens, or exits (EOF).
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read stdout");
        let Some(addr) = line.trim().strip_prefix("listening on http://") else {
            let _ = child.wait();
            panic!(
                "the server did not start: stdout {line:?}, stderr:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Server {
            addr: addr.to_string(),
            child,
            log,
        }
    }

    /// SIGTERM, wait for the exit, and the server's stderr.
    fn stop(mut self) -> String {
        sigterm(&self.child);
        let status = self.child.wait().expect("wait for the server");
        assert!(status.success(), "the server exited with {status}");
        std::fs::read_to_string(&self.log).expect("server log")
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        http(
            &self.addr,
            method,
            path,
            &[("Authorization", &format!("Bearer {KEY}"))],
            body,
            false,
        )
    }

    fn chat(&self, body: &Value) -> Reply {
        self.request("POST", "/v1/chat/completions", body.to_string().as_bytes())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts an OpenAI error body with this status; returns its `error` object.
    fn error(&self, status: u16) -> Value {
        let v = self.json();
        assert_eq!(self.status, status, "{v}");
        let e = v["error"].clone();
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()) && e["type"].is_string(),
            "{v}"
        );
        assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
        e
    }

    /// The `data:` payloads of a server-sent event stream.
    fn events(&self) -> Vec<String> {
        let text = String::from_utf8(self.body.clone()).expect("UTF-8 stream");
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                e.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not an SSE data line: {e:?}"))
                    .to_string()
            })
            .collect()
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`). With `expect_continue`
/// the body is sent only after the server's `100 Continue` (as curl does for large bodies), so
/// a refusal before reading the body arrives whole.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    expect_continue: bool,
) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    // A safety net against a hung server, not a timing assertion.
    s.set_read_timeout(Some(Duration::from_secs(300)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if expect_continue {
        head.push_str("Expect: 100-continue\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("send headers");
    let mut reader = BufReader::new(s.try_clone().expect("clone"));
    if expect_continue {
        let (status, chunked) = read_head(&mut reader);
        if status != 100 {
            return finish(status, chunked, reader);
        }
    }
    s.write_all(body).expect("send body");
    let (status, chunked) = read_head(&mut reader);
    finish(status, chunked, reader)
}

/// Status line and headers; whether the body is chunked.
fn read_head(reader: &mut impl BufRead) -> (u16, bool) {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        if line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
    }
    (status, chunked)
}

fn finish(status: u16, chunked: bool, mut reader: impl BufRead) -> Reply {
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).expect("chunk size");
            let n = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        reader.read_to_end(&mut body).expect("body");
    }
    Reply { status, body }
}

fn conversation_a() -> Value {
    json!([{"role": "user", "content": "Hallo! Wie heißt die Hauptstadt von Österreich?"}])
}

fn conversation_b() -> Value {
    json!([
        {"role": "system", "content": "Antworte knapp und auf Deutsch."},
        {"role": "user", "content": "Grüß Gott!"},
        {"role": "assistant", "content": "Servus! Wie kann ich helfen?"},
        {"role": "user", "content": "Was ist größer, 2 oder 3?"}
    ])
}

/// A completion's text, usage and finish reason equal transformers' greedy generation.
fn assert_matches(reply: &Reply, reference: &Value, max_tokens: u64) -> Value {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let v = reply.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-")),
        "{v}"
    );
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], reference["text"], "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], reference["prompt_tokens"]);
    assert_eq!(
        v["usage"]["completion_tokens"],
        reference["completion_tokens"]
    );
    let finish = if reference["stopped"] == true {
        "stop"
    } else {
        assert_eq!(reference["completion_tokens"], max_tokens);
        "length"
    };
    assert_eq!(choice["finish_reason"], finish);
    v
}

/// The streamed text (the content deltas joined), the finish reason and the usage chunk.
fn streamed(reply: &Reply) -> (String, String, Option<Value>) {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let events = reply.events();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk JSON"))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut text = String::new();
    let mut finish = String::new();
    let mut usage = None;
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
        if let Some(u) = c.get("usage") {
            usage = Some(u.clone());
            continue;
        }
        let choice = &c["choices"][0];
        text.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (text, finish, usage)
}

#[test]
fn leo_torch_serve_answers_as_transformers_generates() {
    let Some((tokenizer, python)) = prerequisites() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("tiny-chat");
    make_model(&python, &tokenizer, &dir);
    let refs = reference(
        &python,
        &dir,
        &json!([
            {"messages": conversation_a(), "max_new_tokens": 16},
            {"messages": conversation_b(), "max_new_tokens": 12},
        ]),
    );

    let mut cmd = Command::new(leo_torch());
    cmd.arg("serve")
        .arg(&dir)
        .args([
            "--port",
            "0",
            "--max-request-bytes",
            "4096",
            "--api-key-env",
            KEY_VAR,
        ])
        .env(KEY_VAR, KEY);
    let server = Server::start(cmd, tmp.path().join("server.log"));
    let mut completions = 0;

    let models = server.request("GET", "/v1/models", b"").json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "tiny-chat", "{models}");
    let health = http(&server.addr, "GET", "/health", &[], b"", false);
    assert_eq!(health.status, 200, "/health needs no key");

    // Greedy completions are transformers' greedy generations.
    let a = json!({"model": "tiny-chat", "messages": conversation_a(), "max_tokens": 16, "temperature": 0});
    let first = assert_matches(&server.chat(&a), &refs[0], 16);
    completions += 1;
    let b = json!({"model": "tiny-chat", "messages": conversation_b(), "max_completion_tokens": 12, "temperature": 0.0});
    assert_matches(&server.chat(&b), &refs[1], 12);
    completions += 1;

    // Streamed, the same text.
    let mut stream = a.clone();
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    let (text, finish, usage) = streamed(&server.chat(&stream));
    completions += 1;
    assert_eq!(text, refs[0]["text"].as_str().expect("text"));
    assert_eq!(
        finish,
        first["choices"][0]["finish_reason"]
            .as_str()
            .expect("finish")
    );
    assert_eq!(usage.expect("a usage chunk"), first["usage"]);

    // A stop string ends the text before it, streamed or not.
    let full = refs[0]["text"].as_str().expect("text");
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 8, "a longer completion to cut: {full:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let cut = &full[..full.find(&stop).expect("stop in text")];
    let mut with_stop = a.clone();
    with_stop["stop"] = json!([stop, "never appears ⁂"]);
    let v = server.chat(&with_stop).json();
    completions += 1;
    assert_eq!(
        v["choices"][0]["message"]["content"], cut,
        "stop {stop:?}: {v}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    with_stop["stream"] = json!(true);
    let (text, finish, _) = streamed(&server.chat(&with_stop));
    completions += 1;
    assert_eq!((text.as_str(), finish.as_str()), (cut, "stop"));

    // Sampling follows the seed.
    let sample = |seed: i64| {
        let mut r = a.clone();
        r["temperature"] = json!(1.0);
        r["top_p"] = json!(0.9);
        r["seed"] = json!(seed);
        server.chat(&r).json()["choices"][0]["message"]["content"].clone()
    };
    let (s7, s7_again, s8) = (sample(7), sample(7), sample(8));
    completions += 3;
    assert_eq!(s7, s7_again);
    assert_ne!(s7, s8);

    // Every malformed request: its status, an OpenAI error body, a message naming the fault.
    let post = |body: &[u8]| server.request("POST", "/v1/chat/completions", body);
    let e = post(b"{\"model\": \"tiny-chat\", \"messages\": [").error(400);
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("line 1 column"),
        "{e}"
    );
    let e = post(br#"{"model": "tiny-chat"}"#).error(400);
    assert_eq!(e["param"], "messages", "{e}");
    let e = server
        .chat(&json!({"model": "tiny-chat", "messages": conversation_a(), "temperature": "hot"}))
        .error(400);
    assert_eq!(e["param"], "temperature", "{e}");
    let e = server
        .chat(&json!({"model": "tiny-chat", "messages": [{"role": "user"}]}))
        .error(400);
    assert_eq!(e["param"], "messages[0].content", "{e}");
    let e = server
        .chat(&json!({"model": "gpt-4", "messages": conversation_a()}))
        .error(404);
    assert_eq!(
        (e["param"].as_str(), e["code"].as_str()),
        (Some("model"), Some("model_not_found"))
    );
    let e = server
        .chat(&json!({"model": "tiny-chat", "messages": conversation_a(), "n": 2}))
        .error(400);
    assert_eq!(e["param"], "n");
    let e = server
        .chat(&json!({"model": "tiny-chat", "messages": []}))
        .error(400);
    assert_eq!(e["param"], "messages");
    let e = server
        .chat(&json!({"model": "tiny-chat", "messages": conversation_a(), "max_tokens": 1000}))
        .error(400);
    assert_eq!(e["code"], "context_length_exceeded", "{e}");
    let big =
        json!({"model": "tiny-chat", "messages": [{"role": "user", "content": "ä".repeat(3000)}]});
    let auth = format!("Bearer {KEY}");
    let e = http(
        &server.addr,
        "POST",
        "/v1/chat/completions",
        &[("Authorization", &auth)],
        big.to_string().as_bytes(),
        true,
    )
    .error(413);
    assert!(e["message"].as_str().unwrap_or("").contains("4096"), "{e}");
    server.request("GET", "/v1/completions", b"").error(404);
    server.request("DELETE", "/v1/models", b"").error(405);
    let body = a.to_string();
    let e = http(
        &server.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        body.as_bytes(),
        false,
    )
    .error(401);
    assert_eq!(e["code"], "invalid_api_key");
    http(
        &server.addr,
        "POST",
        "/v1/chat/completions",
        &[("Authorization", "Bearer wrong")],
        body.as_bytes(),
        false,
    )
    .error(401);

    // One log line per completion, the prompt's hash that of transformers' rendering, the key
    // nowhere.
    let log = server.stop();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("chat completion id="))
        .collect();
    assert_eq!(lines.len(), completions, "{log}");
    let id = first["id"].as_str().expect("id");
    let line = lines
        .iter()
        .find(|l| l.contains(&format!("id={id} ")))
        .unwrap_or_else(|| panic!("no log line for {id}:\n{log}"));
    let sha = &refs[0]["prompt_sha256"].as_str().expect("sha")[..16];
    let expected = format!(
        "chat completion id={id} prompt_sha256={sha} prompt_tokens={} completion_tokens={} finish={} ms=",
        refs[0]["prompt_tokens"],
        refs[0]["completion_tokens"],
        first["choices"][0]["finish_reason"].as_str().expect("finish")
    );
    assert!(line.contains(&expected), "{line}\nexpected: {expected}");
    assert!(!log.contains(KEY), "the API key is in the log:\n{log}");
}

#[test]
fn leo_serve_serves_a_runs_output_by_digest() {
    let Some((tokenizer, python)) = prerequisites() else {
        return;
    };
    leo_torch();
    let sb = Sandbox::new();
    let source = sb.path().join("made");
    make_model(&python, &tokenizer, &source);
    let refs = reference(
        &python,
        &source,
        &json!([{"messages": conversation_a(), "max_new_tokens": 10}]),
    );
    sb.write(
        "publish.toml",
        format!(
            r#"[workflow]
name = "publish"

[stages.publish]
plugin = "shell"
params = {{ run = "cp -R {}/. $LEO_OUTPUT_MODEL/", outputs = ["model"] }}
"#,
            source.display()
        ),
    );
    sb.leo_ok(&["run", "publish.toml"]);
    let digest = output_digest(&sb.status(None), "publish", "model");
    let prefix = &digest["sha256:".len().."sha256:".len() + 16];

    let missing = sb.leo(&["serve", "00000000deadbeef", "--port", "0"]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("no artifact `00000000deadbeef`"), "{err}");

    let server = Server::start(
        sb.cmd(&["serve", prefix, "--port", "0"]),
        sb.path().join("serve.log"),
    );
    let models = server.request("GET", "/v1/models", b"").json();
    let name = format!("sha256:{}", &prefix[..12]);
    assert_eq!(models["data"][0]["id"], name.as_str(), "{models}");
    let reply = server.chat(
        &json!({"model": name, "messages": conversation_a(), "max_tokens": 10, "temperature": 0}),
    );
    assert_matches(&reply, &refs[0], 10);
    let log = server.stop();
    assert!(log.contains(&format!("serving artifact {digest}")), "{log}");
}
