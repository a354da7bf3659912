//! A throwaway PostgreSQL cluster for one test: `initdb` into a temp folder (trust
//! authentication, no fsync), `postgres` listening on 127.0.0.1 on a free port and on a socket in
//! that folder, stopped and removed on drop. When the tests run as root (as in containers), the
//! cluster runs as the `postgres` user, since PostgreSQL refuses to run as root.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running cluster. Dropping it stops the server (fast shutdown) and removes its files.
pub struct Postgres {
    server: Child,
    port: u16,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    /// Kept for its drop: the cluster's files go when the server has stopped.
    _dir: tempfile::TempDir,
}

const SUPERUSER: &str = "leo";

impl Postgres {
    /// Creates and starts a cluster. Binaries come from `$LEO_PG_BIN`, else the newest
    /// `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package), else `$PATH`.
    pub fn start() -> Result<Postgres> {
        let bin = find_bin()?;
        let owner = if unsafe { libc::geteuid() } == 0 {
            Some(user_ids("postgres").context(
                "the tests run as root and PostgreSQL refuses to: a `postgres` user is needed \
                 (Debian's postgresql package creates it)",
            )?)
        } else {
            None
        };
        let dir = tempfile::Builder::new().prefix("leo-pg-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = owner {
            chown(dir.path(), uid, gid)?;
        }
        let data = dir.path().join("data");
        let out = as_owner(Command::new(bin.join("initdb")), owner)
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-locale",
            ])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        // A port nobody listens on now; if the server loses a race for it, try another.
        let mut last_err = None;
        for _ in 0..5 {
            let port = crate::free_port()?;
            match start_server(&bin, &data, dir.path(), port, owner) {
                Ok(server) => {
                    return Ok(Postgres {
                        server,
                        port,
                        bin,
                        owner,
                        _dir: dir,
                    })
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("postgres did not start")))
    }

    /// A PostgreSQL client program, pointed at this cluster as its superuser.
    fn client(&self, program: &str) -> Command {
        let mut cmd = as_owner(Command::new(self.bin.join(program)), self.owner);
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            SUPERUSER,
        ]);
        cmd
    }

    /// Creates a new, empty database and returns its URL.
    pub fn database(&self) -> Result<String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("leo_test_{}", NEXT.fetch_add(1, Ordering::SeqCst));
        let out = self
            .client("createdb")
            .arg(&name)
            .output()
            .context("running createdb")?;
        if !out.status.success() {
            bail!(
                "createdb {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// Every row of the database at `url` (made by [`Postgres::database`]), as `pg_dump` text.
    pub fn dump(&self, url: &str) -> Result<String> {
        let name = url.rsplit('/').next().unwrap_or_default();
        let out = self
            .client("pg_dump")
            .args(["--data-only", "--no-owner", "-d", name])
            .output()
            .context("running pg_dump")?;
        if !out.status.success() {
            bail!(
                "pg_dump {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT = fast shutdown: disconnect clients, stop at once.
        unsafe {
            libc::kill(self.server.id() as i32, libc::SIGINT);
        }
        let _ = self.server.wait();
    }
}

fn start_server(
    bin: &Path,
    data: &Path,
    dir: &Path,
    port: u16,
    owner: Option<(u32, u32)>,
) -> Result<Child> {
    let log = std::fs::File::create(dir.join(format!("server-{port}.log")))?;
    if let Some((uid, gid)) = owner {
        chown(&dir.join(format!("server-{port}.log")), uid, gid)?;
    }
    let mut server = as_owner(Command::new(bin.join("postgres")), owner)
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting postgres")?;
    // Ready when pg_isready says so (it asks the server); give up if the server exits.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.try_wait()? {
            let log =
                std::fs::read_to_string(dir.join(format!("server-{port}.log"))).unwrap_or_default();
            bail!("postgres exited ({status}) while starting:\n{log}");
        }
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .context("running pg_isready")?;
        if ready.success() {
            return Ok(server);
        }
        if Instant::now() > deadline {
            let _ = server.kill();
            bail!("postgres did not accept connections within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn find_bin() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LEO_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("postgres").exists() && dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    bail!("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin, no postgres on PATH; Debian: apt-get install postgresql)")
}

fn as_owner(mut cmd: Command, owner: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
        // Its own HOME-less environment would still point at root's; keep PG from reading it.
        cmd.env("HOME", "/tmp");
    }
    cmd
}

fn user_ids(name: &str) -> Result<(u32, u32)> {
    let c = CString::new(name)?;
    // SAFETY: getpwnam returns a pointer into static storage or null; read it at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        bail!("no user `{name}`");
    }
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))
}
