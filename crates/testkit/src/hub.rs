//! A Hugging Face Hub on loopback, in the Hub's URL layout, for hf:// tests: the revision API
//! (`/api/{models|datasets|spaces}/OWNER/NAME/revision/REV`), `resolve/` answering small files
//! itself and redirecting "LFS" files (302, `X-Linked-Etag` = their SHA-256) to a second
//! host:port that serves the bytes with `Range` support, gated repositories (401/403 and
//! `X-Error-Code: GatedRepo` without the right bearer token), and the Hub's other error codes.
//! It records every request (host, method, path, `Range`, `Authorization`) and can cut a
//! transfer after N bytes once, to test resuming.
//!
//! Plain HTTP/1.1 over `std::net`, one thread per connection, `Connection: close`: a cut is
//! then exactly "these N bytes, then end of stream".

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use sha2::{Digest, Sha256};

/// Which of the two servers saw a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubHost {
    /// The endpoint (API and `resolve/`).
    Endpoint,
    /// Where LFS files redirect to (a CDN, in the real Hub).
    Lfs,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct HubRequest {
    pub host: HubHost,
    pub method: String,
    /// The raw (still percent-encoded) path.
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

/// A repository to serve.
#[derive(Debug, Clone)]
pub struct HubRepo {
    /// `models`, `datasets` or `spaces`.
    pub kind: &'static str,
    /// `OWNER/NAME`.
    pub id: String,
    /// The commit every revision points at (40 hex digits).
    pub commit: String,
    /// Branch and tag names that resolve (besides the commit itself).
    pub revisions: Vec<String>,
    pub files: Vec<HubFile>,
    /// When set, `resolve/` needs `Authorization: Bearer <this>`.
    pub gated_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HubFile {
    pub path: String,
    pub bytes: Vec<u8>,
    /// Served through the LFS host, with the SHA-256 as etag.
    pub lfs: bool,
}

impl HubRepo {
    /// A repository (`kind`: `models`, `datasets`, `spaces`) whose `main` is one commit,
    /// derived from its id.
    pub fn new(kind: &'static str, id: &str) -> HubRepo {
        let commit = hex(&Sha256::digest(format!("commit of {kind}/{id}")))[..40].to_string();
        HubRepo {
            kind,
            id: id.to_string(),
            commit,
            revisions: vec!["main".to_string()],
            files: Vec::new(),
            gated_token: None,
        }
    }

    /// A small file, answered by `resolve/` itself.
    pub fn file(mut self, path: &str, bytes: impl Into<Vec<u8>>) -> HubRepo {
        self.files.push(HubFile {
            path: path.to_string(),
            bytes: bytes.into(),
            lfs: false,
        });
        self
    }

    /// A file stored in LFS: `resolve/` redirects to the LFS host.
    pub fn lfs_file(mut self, path: &str, bytes: impl Into<Vec<u8>>) -> HubRepo {
        self.files.push(HubFile {
            path: path.to_string(),
            bytes: bytes.into(),
            lfs: true,
        });
        self
    }

    pub fn revision(mut self, name: &str) -> HubRepo {
        self.revisions.push(name.to_string());
        self
    }

    pub fn gated(mut self, token: &str) -> HubRepo {
        self.gated_token = Some(token.to_string());
        self
    }

    /// The etag the Hub gives a file: the SHA-256 for LFS files, a git-blob-like SHA-1-sized
    /// hash otherwise.
    pub fn etag(file: &HubFile) -> String {
        if file.lfs {
            hex(&Sha256::digest(&file.bytes))
        } else {
            let mut h = Sha256::new();
            h.update(format!("blob {}\0", file.bytes.len()));
            h.update(&file.bytes);
            hex(&h.finalize())[..40].to_string()
        }
    }
}

struct Shared {
    repos: Vec<HubRepo>,
    lfs_port: u16,
    requests: Mutex<Vec<HubRequest>>,
    /// Repository path → bytes after which the next GET of that file is cut.
    cuts: Mutex<HashMap<String, usize>>,
    stop: AtomicBool,
}

/// The two servers; they stop when this is dropped.
pub struct FakeHub {
    shared: Arc<Shared>,
    endpoint_port: u16,
}

impl FakeHub {
    pub fn start(repos: Vec<HubRepo>) -> Result<FakeHub> {
        let endpoint = TcpListener::bind("127.0.0.1:0")?;
        let lfs = TcpListener::bind("127.0.0.1:0")?;
        let endpoint_port = endpoint.local_addr()?.port();
        let shared = Arc::new(Shared {
            repos,
            lfs_port: lfs.local_addr()?.port(),
            requests: Mutex::new(Vec::new()),
            cuts: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
        });
        for (listener, host) in [(endpoint, HubHost::Endpoint), (lfs, HubHost::Lfs)] {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        let _ = serve(stream, host, &shared);
                    });
                }
            });
        }
        Ok(FakeHub {
            shared,
            endpoint_port,
        })
    }

    /// `http://127.0.0.1:PORT`: what `HF_ENDPOINT` should say.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.endpoint_port)
    }

    /// `http://127.0.0.1:PORT` of the LFS host.
    pub fn lfs_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.shared.lfs_port)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<HubRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Forgets the requests seen so far.
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// The next GET of the file `path` (in any repository) sends `after` bytes of its body and
    /// then closes the connection; later GETs are whole.
    pub fn cut_next_transfer(&self, path: &str, after: usize) {
        lock(&self.shared.cuts).insert(path.to_string(), after);
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake both accept loops so they see the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.endpoint_port));
        let _ = TcpStream::connect(("127.0.0.1", self.shared.lfs_port));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An answer: status, headers, body, and where to cut the body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    cut_after: Option<usize>,
}

impl Reply {
    fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut_after: None,
        }
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.headers.push((k.to_string(), v.into()));
        self
    }

    fn error(status: u16, code: &str, message: &str) -> Reply {
        Reply::new(status)
            .header("X-Error-Code", code)
            .header("X-Error-Message", message)
            .with_body(format!("{{\"error\":\"{message}\"}}").into_bytes())
    }

    fn with_body(mut self, body: Vec<u8>) -> Reply {
        self.body = body;
        self
    }
}

fn serve(stream: TcpStream, host: HubHost, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let path = target.split('?').next().unwrap_or("/").to_string();
    let request = HubRequest {
        host,
        method: method.clone(),
        path: path.clone(),
        range: headers.get("range").cloned(),
        authorization: headers.get("authorization").cloned(),
    };
    lock(&shared.requests).push(request.clone());
    let reply = match host {
        HubHost::Endpoint => endpoint(&request, shared),
        HubHost::Lfs => lfs(&request, shared),
    };
    write_reply(stream, &method, reply)
}

fn write_reply(mut stream: TcpStream, method: &str, reply: Reply) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    stream.write_all(head.as_bytes())?;
    if method != "HEAD" {
        let n = reply
            .cut_after
            .unwrap_or(reply.body.len())
            .min(reply.body.len());
        stream.write_all(&reply.body[..n])?;
    }
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}

/// The Hub's own routes.
fn endpoint(req: &HubRequest, shared: &Shared) -> Reply {
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    // /api/{kind}/{owner}/{name}/revision/{rev}
    if segs.first() == Some(&"api") && segs.len() == 6 && segs[4] == "revision" {
        let id = format!("{}/{}", segs[2], segs[3]);
        let Some(repo) = shared
            .repos
            .iter()
            .find(|r| r.kind == segs[1] && r.id == id)
        else {
            return Reply::error(401, "RepoNotFound", "Repository not found");
        };
        if !resolves(repo, &decode(segs[5])) {
            return Reply::error(404, "RevisionNotFound", "Invalid rev id");
        }
        let siblings: Vec<serde_json::Value> = repo
            .files
            .iter()
            .map(|f| serde_json::json!({ "rfilename": f.path }))
            .collect();
        let body = serde_json::json!({ "id": repo.id, "sha": repo.commit, "siblings": siblings });
        return Reply::new(200)
            .header("Content-Type", "application/json")
            .with_body(body.to_string().into_bytes());
    }
    // /[datasets/|spaces/]{owner}/{name}/resolve/{rev}/{path…}
    let (kind, rest) = match segs.first() {
        Some(&"datasets") => ("datasets", &segs[1..]),
        Some(&"spaces") => ("spaces", &segs[1..]),
        _ => ("models", &segs[..]),
    };
    if rest.len() < 5 || rest[2] != "resolve" {
        return Reply::error(404, "NotFound", "no such route");
    }
    let id = format!("{}/{}", rest[0], rest[1]);
    let Some(repo) = shared.repos.iter().find(|r| r.kind == kind && r.id == id) else {
        return Reply::error(401, "RepoNotFound", "Repository not found");
    };
    if let Some(token) = &repo.gated_token {
        let sent = req.authorization.as_deref();
        if sent != Some(&format!("Bearer {token}")) {
            let status = if sent.is_some() { 403 } else { 401 };
            return Reply::error(
                status,
                "GatedRepo",
                "Access to this repository is restricted",
            );
        }
    }
    if !resolves(repo, &decode(rest[3])) {
        return Reply::error(404, "RevisionNotFound", "Invalid rev id");
    }
    let path = decode(&rest[4..].join("/"));
    let Some(file) = repo.files.iter().find(|f| f.path == path) else {
        return Reply::error(404, "EntryNotFound", "Entry not found");
    };
    let etag = HubRepo::etag(file);
    if file.lfs {
        return Reply::new(302)
            .header(
                "Location",
                format!("http://127.0.0.1:{}/lfs/{etag}?signed=x", shared.lfs_port),
            )
            .header("X-Linked-Etag", format!("\"{etag}\""))
            .header("X-Linked-Size", file.bytes.len().to_string())
            .header("ETag", "\"pointer-etag\"")
            .header("X-Repo-Commit", &repo.commit);
    }
    let reply = ranged(req, &file.bytes)
        .header("ETag", format!("\"{etag}\""))
        .header("X-Repo-Commit", &repo.commit);
    cut(reply, req, shared, &file.path)
}

fn resolves(repo: &HubRepo, rev: &str) -> bool {
    rev == repo.commit || repo.revisions.iter().any(|r| r == rev)
}

/// The LFS host: `/lfs/<sha256>`, no authorisation needed (like a signed URL).
fn lfs(req: &HubRequest, shared: &Shared) -> Reply {
    let sha = req.path.trim_start_matches("/lfs/");
    let found = shared
        .repos
        .iter()
        .flat_map(|r| &r.files)
        .find(|f| f.lfs && HubRepo::etag(f) == sha);
    let Some(file) = found else {
        return Reply::new(404);
    };
    let reply = ranged(req, &file.bytes);
    cut(reply, req, shared, &file.path)
}

/// 200 with everything, or 206 from the `Range: bytes=N-` start.
fn ranged(req: &HubRequest, bytes: &[u8]) -> Reply {
    let from = req
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match from {
        None => Reply::new(200).with_body(bytes.to_vec()),
        Some(n) if n >= bytes.len() => {
            Reply::new(416).header("Content-Range", format!("bytes */{}", bytes.len()))
        }
        Some(n) => Reply::new(206)
            .header(
                "Content-Range",
                format!("bytes {n}-{}/{}", bytes.len() - 1, bytes.len()),
            )
            .with_body(bytes[n..].to_vec()),
    }
}

fn cut(mut reply: Reply, req: &HubRequest, shared: &Shared, path: &str) -> Reply {
    if req.method == "GET" {
        reply.cut_after = lock(&shared.cuts).remove(path);
    }
    reply
}
