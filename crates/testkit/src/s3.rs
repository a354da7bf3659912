//! A throwaway S3-compatible server for one test: `s3s-fs` serving a temp folder on a free
//! loopback port, with generated credentials and one bucket. Stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct S3Server {
    server: Child,
    port: u16,
    access_key: String,
    secret_key: String,
    dir: tempfile::TempDir,
}

/// The bucket every server starts with.
pub const BUCKET: &str = "leo-test";

impl S3Server {
    /// Starts `s3s-fs` from `$LEO_S3S_FS`, `~/.cache/leo/tools/bin` (where
    /// `tools/s3-server.sh` installs it) or `$PATH`.
    pub fn start() -> Result<S3Server> {
        let bin = find_bin()?;
        let dir = tempfile::Builder::new().prefix("leo-s3-").tempdir()?;
        std::fs::create_dir(dir.path().join(BUCKET))?;
        let access_key = format!("AK{}", std::process::id());
        let secret_key = format!("SK{:x}", nonce());
        let mut last_err = None;
        for _ in 0..5 {
            let port = crate::free_port()?;
            let log = std::fs::File::create(dir.path().join(format!("server-{port}.log")))?;
            let mut server = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &access_key, "--secret-key", &secret_key])
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            match wait_listening(&mut server, port) {
                Ok(()) => {
                    return Ok(S3Server {
                        server,
                        port,
                        access_key,
                        secret_key,
                        dir,
                    })
                }
                Err(e) => {
                    let _ = server.kill();
                    let _ = server.wait();
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("s3s-fs did not start")))
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The store URL of a prefix in the bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The AWS environment a client needs for this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.env_for(&self.endpoint())
    }

    /// The same credentials with another endpoint (a proxy in front of the server).
    pub fn env_for(&self, endpoint: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", endpoint.to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// The secret key (tests check that it never leaks).
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Where the bucket's objects lie on disk (to corrupt one on purpose).
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join(BUCKET)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Waits until the server accepts TCP connections on `port`; fails if it exits first.
fn wait_listening(server: &mut Child, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.try_wait()? {
            bail!("s3s-fs exited ({status}) while starting");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("s3s-fs did not listen on port {port} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn find_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LEO_S3S_FS") {
        return Ok(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join(".cache/leo/tools/bin/s3s-fs");
        if p.exists() {
            return Ok(p);
        }
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("s3s-fs").exists() {
            return Ok(dir.join("s3s-fs"));
        }
    }
    bail!("s3s-fs is not installed: run tools/s3-server.sh (`just test` does)")
}

fn nonce() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        ^ ((std::process::id() as u128) << 64)
}
