//! The judge client's retry policy against a real HTTP server on loopback (a few lines over
//! `TcpListener`, answering a script): 429 with `Retry-After` and 503 are retried, a 200 ends
//! it, a 401 fails at once without the key in its message. The client's waits are recorded
//! instead of slept, so the test neither sleeps nor depends on timing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leo_plugin_mtbench::client::{ApiKey, ChatClient, RetryPolicy};
use leo_plugin_mtbench::judge::Message;

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    body: serde_json::Value,
}

/// One scripted answer: status, extra headers, body.
type Reply = (u16, Vec<(&'static str, String)>, String);

/// Serves `script` (status, extra headers, body) to one connection each, in order, and
/// returns the base URL and what it saw.
fn server(script: Vec<Reply>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (status, headers, body) in script {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let (mut len, mut authorization) = (0usize, None);
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (name, value) = h.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => len = value.trim().parse().unwrap(),
                    "authorization" => authorization = Some(value.trim().to_string()),
                    _ => {}
                }
            }
            let mut buf = vec![0; len];
            reader.read_exact(&mut buf).unwrap();
            log.lock().unwrap().push(Seen {
                path,
                authorization,
                body: serde_json::from_slice(&buf).unwrap(),
            });
            let mut resp = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                resp.push_str(&format!("{k}: {v}\r\n"));
            }
            resp.push_str("\r\n");
            resp.push_str(&body);
            let mut stream = stream;
            stream.write_all(resp.as_bytes()).unwrap();
        }
    });
    (url, seen)
}

const KEY: &str = "sk-test-0123456789abcdefSECRET";

fn client(url: &str, waits: Arc<Mutex<Vec<Duration>>>) -> ChatClient {
    let mut c = ChatClient::new(
        url,
        "judge-model",
        Some(ApiKey::new(KEY)),
        2048,
        Duration::from_secs(30),
        RetryPolicy {
            max_retries: 3,
            ..RetryPolicy::default()
        },
    )
    .unwrap();
    c.sleep = Box::new(move |d| waits.lock().unwrap().push(d));
    c
}

fn completion(text: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "judge-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    })
    .to_string()
}

fn messages() -> Vec<Message> {
    vec![
        Message::new("system", "Sie sind ein hilfreicher Assistent."),
        Message::new("user", "Frage"),
    ]
}

#[test]
fn rate_limits_and_server_errors_are_retried_honouring_retry_after() {
    let (url, seen) = server(vec![
        (
            429,
            vec![("retry-after", "7".into())],
            r#"{"error": {"message": "slow down"}}"#.into(),
        ),
        (503, vec![], "overloaded".into()),
        (200, vec![], completion("Bewertung: [[7]]")),
    ]);
    let waits = Arc::new(Mutex::new(Vec::new()));
    let c = client(&url, waits.clone());
    let out = c.complete(&messages()).unwrap();
    assert_eq!(out.content, "Bewertung: [[7]]");
    assert_eq!(out.tries, 3);
    let waits = waits.lock().unwrap().clone();
    // Retry-After as the server said; then the backoff's second step (2 s) with jitter in
    // [1 s, 2 s].
    assert_eq!(waits[0], Duration::from_secs(7));
    assert!(
        waits[1] >= Duration::from_secs(1) && waits[1] <= Duration::from_secs(2),
        "{waits:?}"
    );
    assert_eq!(waits.len(), 2);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.path, "/v1/chat/completions");
        assert_eq!(
            s.authorization.as_deref(),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert_eq!(s.body["temperature"], 0.0);
        assert_eq!(s.body["max_tokens"], 2048);
        assert_eq!(s.body["model"], "judge-model");
        assert_eq!(s.body["messages"][1]["content"], "Frage");
    }
}

#[test]
fn a_refused_key_fails_at_once_without_showing_it() {
    // Providers echo the key they refuse, whole or shortened.
    let echo = format!(
        r#"{{"error": {{"message": "Incorrect API key provided: {KEY}. Also known as {}...{}"}}}}"#,
        &KEY[..11],
        &KEY[KEY.len() - 8..]
    );
    let (url, seen) = server(vec![
        (401, vec![], echo),
        (200, vec![], completion("unused")),
    ]);
    let waits = Arc::new(Mutex::new(Vec::new()));
    let err = format!(
        "{:#}",
        client(&url, waits.clone())
            .complete(&messages())
            .unwrap_err()
    );
    assert!(
        err.contains("401") && err.contains("Incorrect API key provided"),
        "{err}"
    );
    assert!(
        !err.contains(KEY) && !err.contains(&KEY[..11]) && !err.contains(&KEY[KEY.len() - 8..]),
        "{err}"
    );
    assert!(waits.lock().unwrap().is_empty());
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn retries_end_after_max_retries_and_connection_errors_count() {
    // A port nobody listens on: connection refused, retried, then given up.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let waits = Arc::new(Mutex::new(Vec::new()));
    let err = format!(
        "{:#}",
        client(&format!("http://127.0.0.1:{port}/v1"), waits.clone())
            .complete(&messages())
            .unwrap_err()
    );
    assert!(err.contains("gave up after 4 tries"), "{err}");
    let waits = waits.lock().unwrap().clone();
    assert_eq!(waits.len(), 3);
    // Exponential: 1, 2, 4 s halves of which are jitter.
    for (i, w) in waits.iter().enumerate() {
        let full = Duration::from_secs(1 << i);
        assert!(*w >= full / 2 && *w <= full, "wait {i}: {w:?}");
    }
}

#[test]
fn the_backoff_doubles_up_to_its_cap_and_retry_after_is_bounded() {
    let p = RetryPolicy::default();
    assert_eq!(p.delay(0, None, 1.0), Duration::from_secs(1));
    assert_eq!(p.delay(3, None, 0.0), Duration::from_secs(4));
    assert_eq!(p.delay(30, None, 1.0), Duration::from_secs(60));
    assert_eq!(
        p.delay(1, Some(Duration::from_secs(3)), 0.5),
        Duration::from_secs(3)
    );
    assert_eq!(
        p.delay(1, Some(Duration::from_secs(86400)), 0.5),
        Duration::from_secs(600)
    );
}
