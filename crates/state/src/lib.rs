//! Run state. All reads and writes of the database go through [`State`]; nothing else in leo
//! opens it. SQLite by default (a file, WAL), PostgreSQL for teams (`postgres://`); both run the
//! same embedded migrations and the same portable SQL through sqlx's `Any` driver.

mod records;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

pub use records::*;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Clone, Debug)]
pub struct State {
    pool: AnyPool,
    /// Where the state lives, with any password replaced by `***` (safe to print).
    url: String,
}

/// Which database a state location names.
enum Location<'a> {
    /// A file path (or `sqlite://PATH`).
    Sqlite(&'a str),
    /// `postgres://` or `postgresql://`.
    Postgres(&'a str),
}

fn parse_location(location: &str) -> Result<Location<'_>> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        return Ok(Location::Postgres(location));
    }
    let path = location
        .strip_prefix("sqlite://")
        .or_else(|| location.strip_prefix("sqlite:"))
        .unwrap_or(location);
    if path.contains("://") {
        anyhow::bail!(
            "state `{}`: not a SQLite path or sqlite:// URL, nor a postgres:// URL",
            redact_url(location)
        );
    }
    Ok(Location::Sqlite(path))
}

/// `scheme://user:secret@host/db` -> `scheme://user:***@host/db`; other text unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            // Query parameters may carry a password too (`?password=`).
            let tail = match tail.split_once('?') {
                Some((path, query)) => {
                    let q: Vec<String> = query
                        .split('&')
                        .map(|kv| match kv.split_once('=') {
                            Some((k, _)) if k.eq_ignore_ascii_case("password") => {
                                format!("{k}=***")
                            }
                            _ => kv.to_string(),
                        })
                        .collect();
                    format!("{path}?{}", q.join("&"))
                }
                None => tail.to_string(),
            };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

impl State {
    /// Opens the state at a path or `sqlite://` URL (created when missing), or in a PostgreSQL
    /// database (`postgres://user@host/db`; the database must exist), and applies migrations.
    /// Both run the same migrations and SQL.
    pub async fn open(location: &str) -> Result<State> {
        sqlx::any::install_default_drivers();
        match parse_location(location)? {
            Location::Sqlite(path) => open_sqlite(path).await,
            Location::Postgres(url) => open_postgres(url).await,
        }
    }

    /// Opens existing state without creating it (for read-only commands).
    pub async fn open_existing(location: &str) -> Result<State> {
        if let Location::Sqlite(path) = parse_location(location)? {
            if !Path::new(path).exists() {
                anyhow::bail!(
                    "no state database at {path} (run `leo run WORKFLOW` first, or pass --state)"
                );
            }
        }
        State::open(location).await
    }

    /// Whether this state is shared through a server (PostgreSQL), so that several engines on
    /// several machines may use it at once.
    pub fn is_shared(&self) -> bool {
        self.url.starts_with("postgres")
    }

    pub fn location(&self) -> &str {
        &self.url
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- runs ---------------------------------------------------------------------------

    pub async fn create_run(&self, run: &RunRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO runs (id, workflow_name, workflow_path, spec_json, store_url, status,
                               created_at, updated_at, engine_host, engine_pid, engine_heartbeat,
                               provenance)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $7, $10)",
        )
        .bind(&run.id)
        .bind(&run.workflow_name)
        .bind(&run.workflow_path)
        .bind(&run.spec_json)
        .bind(&run.store_url)
        .bind(run.status.as_str())
        .bind(run.created_at)
        .bind(&run.engine_host)
        .bind(run.engine_pid)
        .bind(&run.provenance)
        .execute(&self.pool)
        .await
        .context("recording the new run")?;
        Ok(())
    }

    pub async fn get_run(&self, id: &str) -> Result<Option<RunRecord>> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| RunRecord::from_row(&r)).transpose()
    }

    /// Runs, newest first.
    pub async fn list_runs(&self, limit: i64) -> Result<Vec<RunRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(RunRecord::from_row).collect()
    }

    pub async fn latest_run(&self, workflow_name: Option<&str>) -> Result<Option<RunRecord>> {
        let row = match workflow_name {
            Some(name) => {
                sqlx::query(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE workflow_name = $1 ORDER BY created_at DESC, id DESC LIMIT 1"
                ))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, id DESC LIMIT 1"))
                    .fetch_optional(&self.pool)
                    .await?
            }
        };
        row.map(|r| RunRecord::from_row(&r)).transpose()
    }

    pub async fn set_run_status(&self, id: &str, status: RunStatus) -> Result<()> {
        sqlx::query("UPDATE runs SET status = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(status.as_str())
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Claims a run for this engine process on resume; false when another engine claimed or
    /// changed it since `previous` was read.
    pub async fn claim_run(
        &self,
        id: &str,
        host: &str,
        pid: i64,
        previous: &RunRecord,
    ) -> Result<bool> {
        // Conditional on what the caller saw, so two engines resuming one run cannot both win.
        let claimed = sqlx::query(
            "UPDATE runs SET status = 'running', engine_host = $2, engine_pid = $3,
                             engine_heartbeat = $4, updated_at = $4
             WHERE id = $1 AND status = $5 AND updated_at = $6",
        )
        .bind(id)
        .bind(host)
        .bind(pid)
        .bind(now_ms())
        .bind(previous.status.as_str())
        .bind(previous.updated_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    /// The engine's heartbeat: the run and every attempt it is running.
    pub async fn heartbeat(&self, run_id: &str) -> Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE runs SET engine_heartbeat = $2 WHERE id = $1")
            .bind(run_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE attempts SET heartbeat_at = $2 WHERE run_id = $1 AND status = 'running'",
        )
        .bind(run_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks attempts and stages left `running` by a dead engine as `lost`. Returns how many
    /// attempts were lost.
    pub async fn mark_lost(&self, run_id: &str) -> Result<u64> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let lost = sqlx::query(
            "UPDATE attempts SET status = 'lost', finished_at = $2,
                    error = 'the engine running this attempt stopped (killed or crashed)'
             WHERE run_id = $1 AND status = 'running'",
        )
        .bind(run_id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("UPDATE stages SET status = 'lost', updated_at = $2 WHERE run_id = $1 AND status = 'running'")
            .bind(run_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(lost)
    }

    // ---- stages -------------------------------------------------------------------------

    pub async fn upsert_stage(&self, s: &StageUpdate<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO stages (run_id, name, status, fingerprint, fingerprint_json, cached_from_run, error, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (run_id, name) DO UPDATE SET
                status = excluded.status,
                fingerprint = COALESCE(excluded.fingerprint, stages.fingerprint),
                fingerprint_json = COALESCE(excluded.fingerprint_json, stages.fingerprint_json),
                cached_from_run = excluded.cached_from_run,
                error = excluded.error,
                updated_at = excluded.updated_at",
        )
        .bind(s.run_id)
        .bind(s.stage)
        .bind(s.status.as_str())
        .bind(s.fingerprint)
        .bind(s.fingerprint_json)
        .bind(s.cached_from_run)
        .bind(s.error)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .with_context(|| format!("recording stage {} as {}", s.stage, s.status.as_str()))?;
        Ok(())
    }

    /// Records every stage of a new run as pending, in one transaction.
    pub async fn add_pending_stages(&self, run_id: &str, stages: &[&str]) -> Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for stage in stages {
            sqlx::query("INSERT INTO stages (run_id, name, status, updated_at) VALUES ($1, $2, 'pending', $3)")
                .bind(run_id)
                .bind(stage)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit()
            .await
            .with_context(|| format!("recording the stages of run {run_id}"))?;
        Ok(())
    }

    pub async fn stages(&self, run_id: &str) -> Result<Vec<StageRecord>> {
        let rows = sqlx::query(
            "SELECT s.name, s.status, s.fingerprint, s.fingerprint_json, s.cached_from_run, s.error, s.updated_at,
                    (SELECT COUNT(*) FROM attempts a WHERE a.run_id = s.run_id AND a.stage = s.name) AS attempts
             FROM stages s WHERE s.run_id = $1 ORDER BY s.name",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(StageRecord::from_row).collect()
    }

    /// [`State::stages`] keyed by stage name.
    pub async fn stages_by_name(
        &self,
        run_id: &str,
    ) -> Result<std::collections::HashMap<String, StageRecord>> {
        Ok(self
            .stages(run_id)
            .await?
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect())
    }

    /// The most recent stage done with this fingerprint (in any run): the run that executed it
    /// (following cache hits back to their origin) and its outputs.
    pub async fn find_cached(
        &self,
        fingerprint: &str,
    ) -> Result<Option<(String, Vec<(String, String)>)>> {
        let row = sqlx::query(
            "SELECT run_id, name, COALESCE(cached_from_run, run_id) AS origin FROM stages
             WHERE fingerprint = $1 AND status IN ('succeeded', 'cached')
             ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let run_id: String = row.try_get("run_id")?;
        let stage: String = row.try_get("name")?;
        let origin: String = row.try_get("origin")?;
        let outputs = self.stage_outputs(&run_id, &stage).await?;
        Ok(Some((origin, outputs)))
    }

    /// (output name, artifact digest) of a stage in a run.
    pub async fn stage_outputs(&self, run_id: &str, stage: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT name, digest FROM stage_outputs WHERE run_id = $1 AND stage = $2 ORDER BY name",
        )
        .bind(run_id)
        .bind(stage)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("digest")?)))
            .collect()
    }

    /// Marks a stage succeeded (or cached) together with its outputs and their lineage, in one
    /// transaction: this row is what makes the outputs visible.
    pub async fn complete_stage(&self, c: &StageCompletion<'_>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if let Some(lease) = c.lease {
            fence(&mut tx, lease).await?;
        }
        write_completion(&mut tx, c).await?;
        tx.commit()
            .await
            .with_context(|| format!("committing outputs of stage {}", c.stage))?;
        Ok(())
    }

    // ---- leases -------------------------------------------------------------------------

    /// Takes the lease on `fingerprint` for `holder` until `expires_at` (ms), when it is free,
    /// expired, or already this holder's; returns it with a new fencing token, or None while
    /// another holder's lease is live.
    pub async fn acquire_lease(
        &self,
        fingerprint: &str,
        holder: &str,
        expires_at: i64,
    ) -> Result<Option<Lease>> {
        let token: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leases (fingerprint, holder, token, expires_at) VALUES ($1, $2, 1, $3)
             ON CONFLICT (fingerprint) DO UPDATE
                SET holder = excluded.holder, token = leases.token + 1,
                    expires_at = excluded.expires_at
                WHERE leases.expires_at < $4 OR leases.holder = excluded.holder
             RETURNING token",
        )
        .bind(fingerprint)
        .bind(holder)
        .bind(expires_at)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("taking the lease on {fingerprint}"))?;
        Ok(token.map(|token| Lease {
            fingerprint: fingerprint.to_string(),
            token,
        }))
    }

    /// Extends every live lease of `holder` to `expires_at`; returns how many.
    pub async fn renew_leases(&self, holder: &str, expires_at: i64) -> Result<u64> {
        let done =
            sqlx::query("UPDATE leases SET expires_at = $2 WHERE holder = $1 AND expires_at > 0")
                .bind(holder)
                .bind(expires_at)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    /// Gives a lease up (a no-op when it was taken over meanwhile).
    pub async fn release_lease(&self, lease: &Lease) -> Result<()> {
        sqlx::query("UPDATE leases SET expires_at = 0 WHERE fingerprint = $1 AND token = $2")
            .bind(&lease.fingerprint)
            .bind(lease.token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- attempts -----------------------------------------------------------------------

    pub async fn attempt_count(&self, run_id: &str, stage: &str) -> Result<u32> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM attempts WHERE run_id = $1 AND stage = $2")
                .bind(run_id)
                .bind(stage)
                .fetch_one(&self.pool)
                .await?;
        Ok(n as u32)
    }

    pub async fn start_attempt(&self, a: &NewAttempt<'_>) -> Result<String> {
        let id = format!("{}/{}/{}", a.run_id, a.stage, a.number);
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO attempts (id, run_id, stage, number, status, host, pid, started_at, heartbeat_at, resumed_from)
             VALUES ($1, $2, $3, $4, 'running', $5, NULL, $6, $6, $7)",
        )
        .bind(&id)
        .bind(a.run_id)
        .bind(a.stage)
        .bind(a.number as i64)
        .bind(a.host)
        .bind(now)
        .bind(a.resumed_from)
        .execute(&mut *tx)
        .await
        .with_context(|| format!("recording attempt {id}"))?;
        for (name, digest, uri) in a.inputs {
            if let Some(uri) = uri {
                sqlx::query(
                    "INSERT INTO artifacts (digest, kind, size, files, uri, created_at)
                     VALUES ($1, 'external', 0, 0, $2, $3) ON CONFLICT (digest) DO NOTHING",
                )
                .bind(digest)
                .bind(uri)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            insert_edge(&mut tx, &id, digest, "input", name).await?;
        }
        if let Some(ckpt) = a.resumed_from {
            insert_edge(&mut tx, &id, ckpt, "resumed_from", "checkpoint").await?;
        }
        sqlx::query(
            "UPDATE stages SET status = 'running', error = NULL, updated_at = $3,
                    fingerprint = COALESCE($4, fingerprint), fingerprint_json = COALESCE($5, fingerprint_json)
             WHERE run_id = $1 AND name = $2",
        )
        .bind(a.run_id)
        .bind(a.stage)
        .bind(now)
        .bind(a.fingerprint.map(|f| f.0))
        .bind(a.fingerprint.map(|f| f.1))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn set_attempt_pid(&self, attempt_id: &str, pid: i64) -> Result<()> {
        sqlx::query("UPDATE attempts SET pid = $2 WHERE id = $1")
            .bind(attempt_id)
            .bind(pid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the scheduler job that runs an attempt (`slurm:<id>`).
    pub async fn set_attempt_job(&self, attempt_id: &str, job_id: &str) -> Result<()> {
        sqlx::query("UPDATE attempts SET job_id = $2 WHERE id = $1")
            .bind(attempt_id)
            .bind(job_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records how an attempt ended. With a completion under a lease that was taken over
    /// meanwhile (a stale fencing token), the attempt is recorded as failed, its outputs are not,
    /// and the call returns an error saying so.
    pub async fn finish_attempt(&self, f: &AttemptFinish<'_>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let mut lost = None;
        let mut f = *f;
        if let Some(lease) = f.completion.and_then(|c| c.lease) {
            if let Err(e) = fence(&mut tx, lease).await {
                lost = Some(format!("{e:#}"));
                f.status = AttemptStatus::Failed;
                f.completion = None;
            }
        }
        let f = &AttemptFinish {
            error: lost.as_deref().or(f.error),
            ..f
        };
        if let Some((digest, size)) = f.log {
            sqlx::query(
                "INSERT INTO artifacts (digest, kind, size, files, uri, created_at)
                 VALUES ($1, 'log', $2, 1, NULL, $3) ON CONFLICT (digest) DO NOTHING",
            )
            .bind(digest)
            .bind(size as i64)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            insert_edge(&mut tx, f.attempt_id, digest, "log", "log").await?;
        }
        sqlx::query(
            "UPDATE attempts SET status = $2, exit_code = $3, error = $4, log_artifact = $5, finished_at = $6
             WHERE id = $1",
        )
        .bind(f.attempt_id)
        .bind(f.status.as_str())
        .bind(f.exit_code)
        .bind(f.error)
        .bind(f.log.map(|(d, _)| d))
        .bind(f.finished_at)
        .execute(&mut *tx)
        .await?;
        if let Some(c) = f.completion {
            write_completion(&mut tx, c).await?;
        }
        tx.commit().await?;
        match lost {
            Some(why) => Err(anyhow::anyhow!(why)),
            None => Ok(()),
        }
    }

    pub async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = $1 ORDER BY stage, number"
        ))
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(AttemptRecord::from_row).collect()
    }

    pub async fn get_attempt(&self, attempt_id: &str) -> Result<Option<AttemptRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE id = $1"
        ))
        .bind(attempt_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| AttemptRecord::from_row(&r)).transpose()
    }

    // ---- checkpoints, events, metrics ---------------------------------------------------

    pub async fn record_checkpoint(&self, c: &CheckpointRecord) -> Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO artifacts (digest, kind, size, files, uri, created_at)
             VALUES ($1, 'checkpoint', $2, $3, NULL, $4) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(&c.digest)
        .bind(c.size as i64)
        .bind(c.files as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO checkpoints (run_id, stage, step, digest, attempt_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (run_id, stage, step) DO UPDATE SET digest = excluded.digest, attempt_id = excluded.attempt_id",
        )
        .bind(&c.run_id)
        .bind(&c.stage)
        .bind(c.step as i64)
        .bind(&c.digest)
        .bind(&c.attempt_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_edge(
            &mut tx,
            &c.attempt_id,
            &c.digest,
            "checkpoint",
            &format!("step-{}", c.step),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The checkpoint with the highest step recorded for a stage of a run.
    pub async fn latest_checkpoint(
        &self,
        run_id: &str,
        stage: &str,
    ) -> Result<Option<(String, u64)>> {
        let row = sqlx::query("SELECT digest, step FROM checkpoints WHERE run_id = $1 AND stage = $2 ORDER BY step DESC LIMIT 1")
            .bind(run_id)
            .bind(stage)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("digest")?, r.try_get::<i64, _>("step")? as u64)))
            .transpose()
    }

    /// (step, digest) of every checkpoint of a stage in a run, by step.
    pub async fn checkpoints(&self, run_id: &str, stage: &str) -> Result<Vec<(u64, String)>> {
        let rows = sqlx::query(
            "SELECT step, digest FROM checkpoints WHERE run_id = $1 AND stage = $2 ORDER BY step",
        )
        .bind(run_id)
        .bind(stage)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>("step")? as u64, r.try_get("digest")?)))
            .collect()
    }

    pub async fn record_event(
        &self,
        attempt_id: &str,
        seq: i64,
        kind: &str,
        payload: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO events (attempt_id, seq, at, kind, payload) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(attempt_id)
        .bind(seq)
        .bind(now_ms())
        .bind(kind)
        .bind(payload)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn record_metric(
        &self,
        attempt_id: &str,
        seq: i64,
        step: Option<u64>,
        name: &str,
        value: f64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO metrics (attempt_id, seq, at, step, name, value) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(attempt_id)
            .bind(seq)
            .bind(now_ms())
            .bind(step.map(|s| s as i64))
            .bind(name)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The latest value of each metric an attempt reported.
    pub async fn latest_metrics(
        &self,
        attempt_id: &str,
    ) -> Result<std::collections::BTreeMap<String, f64>> {
        let rows =
            sqlx::query("SELECT name, value FROM metrics WHERE attempt_id = $1 ORDER BY seq")
                .bind(attempt_id)
                .fetch_all(&self.pool)
                .await?;
        let mut out = std::collections::BTreeMap::new();
        for r in rows {
            out.insert(r.try_get("name")?, r.try_get("value")?);
        }
        Ok(out)
    }

    /// The latest value (and step) of each metric an attempt reported, in the order the
    /// metrics were first reported.
    pub async fn latest_metric_values(&self, attempt_id: &str) -> Result<Vec<LatestMetric>> {
        let rows = sqlx::query(
            "SELECT m.name, m.value, m.step, m.seq FROM metrics m
             JOIN (SELECT name, MIN(seq) AS first_seq, MAX(seq) AS last_seq
                   FROM metrics WHERE attempt_id = $1 GROUP BY name) l
               ON m.seq = l.last_seq
             WHERE m.attempt_id = $1
             ORDER BY l.first_seq",
        )
        .bind(attempt_id)
        .fetch_all(&self.pool)
        .await
        .with_context(|| format!("reading the metrics of attempt {attempt_id}"))?;
        rows.iter()
            .map(|r| {
                Ok(LatestMetric {
                    name: r.try_get("name")?,
                    value: r.try_get("value")?,
                    step: r.try_get::<Option<i64>, _>("step")?.map(|s| s as u64),
                    seq: r.try_get("seq")?,
                })
            })
            .collect()
    }

    /// Every metric event of a run, all attempts, ordered by stage, attempt number and event
    /// sequence; only `stage`'s when given.
    pub async fn run_metrics(
        &self,
        run_id: &str,
        stage: Option<&str>,
    ) -> Result<Vec<MetricRecord>> {
        const COLUMNS: &str = "SELECT a.stage, a.number, m.seq, m.step, m.name, m.value, m.at
             FROM metrics m JOIN attempts a ON a.id = m.attempt_id";
        let rows = match stage {
            Some(stage) => {
                sqlx::query(&format!(
                    "{COLUMNS} WHERE a.run_id = $1 AND a.stage = $2 ORDER BY a.number, m.seq"
                ))
                .bind(run_id)
                .bind(stage)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "{COLUMNS} WHERE a.run_id = $1 ORDER BY a.stage, a.number, m.seq"
                ))
                .bind(run_id)
                .fetch_all(&self.pool)
                .await
            }
        }
        .with_context(|| format!("reading the metrics of run {run_id}"))?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(MetricRecord {
                    stage: r.try_get("stage")?,
                    attempt: u32::try_from(r.try_get::<i64, _>("number")?)?,
                    seq: r.try_get("seq")?,
                    step: r.try_get::<Option<i64>, _>("step")?.map(|s| s as u64),
                    name: r.try_get("name")?,
                    value: r.try_get("value")?,
                    at: r.try_get("at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Stage names by their bytes on every backend (PostgreSQL may collate text otherwise).
        out.sort_by(|a, b| {
            (a.stage.as_bytes(), a.attempt, a.seq).cmp(&(b.stage.as_bytes(), b.attempt, b.seq))
        });
        Ok(out)
    }

    /// The payload of an attempt's latest event of a kind.
    pub async fn latest_event(&self, attempt_id: &str, kind: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT payload FROM events WHERE attempt_id = $1 AND kind = $2 ORDER BY seq DESC LIMIT 1")
            .bind(attempt_id)
            .bind(kind)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(r.try_get("payload")?)).transpose()
    }

    /// What an attempt reported about where it ran (`environment` events), later facts over
    /// earlier ones.
    pub async fn attempt_environment(
        &self,
        attempt_id: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        let mut facts = serde_json::Map::new();
        for (kind, payload) in self.events(attempt_id).await? {
            if kind != "environment" {
                continue;
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&payload) {
                for (k, fact) in v["facts"].as_object().into_iter().flatten() {
                    facts.insert(k.clone(), fact.clone());
                }
            }
        }
        Ok(facts)
    }

    pub async fn events(&self, attempt_id: &str) -> Result<Vec<(String, String)>> {
        let rows =
            sqlx::query("SELECT kind, payload FROM events WHERE attempt_id = $1 ORDER BY seq")
                .bind(attempt_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("kind")?, r.try_get("payload")?)))
            .collect()
    }

    // ---- external inputs ----------------------------------------------------------------

    /// The digest recorded for an external input whose stat signature is still `signature`.
    pub async fn external_digest(&self, uri: &str, signature: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT digest FROM external_digests WHERE uri = $1 AND signature = $2")
                .bind(uri)
                .bind(signature)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| Ok(r.try_get("digest")?)).transpose()
    }

    pub async fn record_external_digest(
        &self,
        uri: &str,
        signature: &str,
        digest: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO external_digests (uri, signature, digest, checked_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (uri) DO UPDATE SET signature = excluded.signature, digest = excluded.digest,
                                             checked_at = excluded.checked_at",
        )
        .bind(uri)
        .bind(signature)
        .bind(digest)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- lineage ------------------------------------------------------------------------

    /// The attempt that produced an artifact (as output or checkpoint), if any.
    pub async fn producer(&self, digest: &str) -> Result<Option<(AttemptRecord, String, String)>> {
        let row = sqlx::query(
            "SELECT attempt_id, relation, name FROM lineage_edges
             WHERE artifact = $1 AND relation IN ('output', 'checkpoint', 'log')
             ORDER BY attempt_id LIMIT 1",
        )
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let attempt_id: String = row.try_get("attempt_id")?;
        let relation: String = row.try_get("relation")?;
        let name: String = row.try_get("name")?;
        Ok(self
            .get_attempt(&attempt_id)
            .await?
            .map(|a| (a, relation, name)))
    }

    /// (relation, name, artifact) edges into an attempt: inputs and resumed-from checkpoints.
    pub async fn attempt_inputs(&self, attempt_id: &str) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT relation, name, artifact FROM lineage_edges
             WHERE attempt_id = $1 AND relation IN ('input', 'resumed_from') ORDER BY relation, name",
        )
        .bind(attempt_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("relation")?,
                    r.try_get("name")?,
                    r.try_get("artifact")?,
                ))
            })
            .collect()
    }

    pub async fn artifact(&self, digest: &str) -> Result<Option<ArtifactRecord>> {
        let row = sqlx::query(
            "SELECT digest, kind, size, files, uri, created_at FROM artifacts WHERE digest = $1",
        )
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| ArtifactRecord::from_row(&r)).transpose()
    }

    /// Every artifact the state records (outputs, logs, checkpoints, external inputs).
    pub async fn all_artifacts(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT digest FROM artifacts")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("digest")?)).collect()
    }

    /// Digests starting with `prefix` (so users can type a short id).
    pub async fn artifacts_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT digest FROM artifacts WHERE digest LIKE $1 ORDER BY digest LIMIT 10",
        )
        .bind(format!("{}%", prefix.replace(['%', '_'], "")))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("digest")?)).collect()
    }
}

async fn open_sqlite(path: &str) -> Result<State> {
    if let Some(parent) = Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating folder for state database {path}"))?;
        }
    }
    // One connection: SQLite serialises writers anyway, and one connection never waits on
    // another of its own process.
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                use sqlx::Executor;
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON;",
                )
                .await?;
                Ok(())
            })
        })
        .connect(&format!("sqlite://{path}?mode=rwc"))
        .await
        .with_context(|| format!("opening state database {path}"))?;
    migrate(pool, path.to_string()).await
}

async fn open_postgres(url: &str) -> Result<State> {
    let shown = redact_url(url);
    let pool = AnyPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await
        .with_context(|| format!("connecting to state database {shown}"))?;
    migrate(pool, shown).await
}

/// Applies the migrations (under the database's migration lock on PostgreSQL, so engines that
/// start together do not race).
async fn migrate(pool: AnyPool, shown: String) -> Result<State> {
    MIGRATIONS
        .run(&pool)
        .await
        .with_context(|| format!("migrating state database {shown}"))?;
    Ok(State { pool, url: shown })
}

/// Checks that `lease` still holds the current fencing token and releases it, inside the
/// transaction that records the work done under it. On PostgreSQL the update locks the row until
/// commit, so no one takes the lease over between the check and the commit.
async fn fence(tx: &mut sqlx::Transaction<'_, sqlx::Any>, lease: &Lease) -> Result<()> {
    let done =
        sqlx::query("UPDATE leases SET expires_at = 0 WHERE fingerprint = $1 AND token = $2")
            .bind(&lease.fingerprint)
            .bind(lease.token)
            .execute(&mut **tx)
            .await?;
    if done.rows_affected() != 1 {
        anyhow::bail!(
            "the lease on {} was taken over by another engine: fencing token {} is stale, so \
             this attempt's results are not recorded",
            lease.fingerprint,
            lease.token
        );
    }
    Ok(())
}

async fn write_completion(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    c: &StageCompletion<'_>,
) -> Result<()> {
    let now = now_ms();
    for out in c.outputs {
        sqlx::query(
            "INSERT INTO artifacts (digest, kind, size, files, uri, created_at)
             VALUES ($1, 'output', $2, $3, NULL, $4) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(&out.digest)
        .bind(out.size as i64)
        .bind(out.files as i64)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO stage_outputs (run_id, stage, name, digest) VALUES ($1, $2, $3, $4)
             ON CONFLICT (run_id, stage, name) DO UPDATE SET digest = excluded.digest",
        )
        .bind(c.run_id)
        .bind(c.stage)
        .bind(&out.name)
        .bind(&out.digest)
        .execute(&mut **tx)
        .await?;
        if let Some(attempt) = c.attempt_id {
            insert_edge(tx, attempt, &out.digest, "output", &out.name).await?;
        }
    }
    sqlx::query(
        "UPDATE stages SET status = $3, cached_from_run = $4, error = NULL, updated_at = $5,
                fingerprint = COALESCE($6, fingerprint), fingerprint_json = COALESCE($7, fingerprint_json)
         WHERE run_id = $1 AND name = $2",
    )
    .bind(c.run_id)
    .bind(c.stage)
    .bind(c.status.as_str())
    .bind(c.cached_from_run)
    .bind(now)
    .bind(c.fingerprint.map(|f| f.0))
    .bind(c.fingerprint.map(|f| f.1))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_edge(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    attempt_id: &str,
    artifact: &str,
    relation: &str,
    name: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO lineage_edges (attempt_id, artifact, relation, name) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(attempt_id)
    .bind(artifact)
    .bind(relation)
    .bind(name)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
