-- Portable SQL: TEXT ids made by the engine, BIGINT millisecond timestamps, no AUTOINCREMENT,
-- so the same schema runs on SQLite and PostgreSQL.

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    workflow_name    TEXT NOT NULL,
    workflow_path    TEXT NOT NULL,
    -- The resolved workflow (JSON) the run executes; resume reads this, never the file.
    spec_json        TEXT NOT NULL,
    store_url        TEXT NOT NULL,
    status           TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    engine_host      TEXT,
    engine_pid       BIGINT,
    engine_heartbeat BIGINT
);
CREATE INDEX runs_by_workflow ON runs (workflow_name, created_at);

CREATE TABLE stages (
    run_id           TEXT NOT NULL REFERENCES runs (id),
    name             TEXT NOT NULL,
    status           TEXT NOT NULL,
    fingerprint      TEXT,
    -- Canonical JSON the fingerprint hashes, so `leo plan` can say which field changed.
    fingerprint_json TEXT,
    cached_from_run  TEXT,
    error            TEXT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX stages_by_fingerprint ON stages (fingerprint, status);

CREATE TABLE attempts (
    id           TEXT PRIMARY KEY,
    run_id       TEXT NOT NULL REFERENCES runs (id),
    stage        TEXT NOT NULL,
    number       INTEGER NOT NULL,
    status       TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          BIGINT,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    finished_at  BIGINT,
    exit_code    INTEGER,
    error        TEXT,
    resumed_from TEXT,
    log_artifact TEXT,
    UNIQUE (run_id, stage, number)
);

CREATE TABLE artifacts (
    digest     TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    size       BIGINT NOT NULL,
    files      BIGINT NOT NULL,
    -- For external inputs: where the data came from.
    uri        TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE stage_outputs (
    run_id TEXT NOT NULL,
    stage  TEXT NOT NULL,
    name   TEXT NOT NULL,
    digest TEXT NOT NULL REFERENCES artifacts (digest),
    PRIMARY KEY (run_id, stage, name)
);

CREATE TABLE checkpoints (
    run_id     TEXT NOT NULL,
    stage      TEXT NOT NULL,
    step       BIGINT NOT NULL,
    digest     TEXT NOT NULL REFERENCES artifacts (digest),
    attempt_id TEXT NOT NULL REFERENCES attempts (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, stage, step)
);

-- artifact -> attempt (input, resumed_from) and attempt -> artifact (output, checkpoint, log).
CREATE TABLE lineage_edges (
    attempt_id TEXT NOT NULL REFERENCES attempts (id),
    artifact   TEXT NOT NULL,
    relation   TEXT NOT NULL,
    name       TEXT NOT NULL,
    PRIMARY KEY (attempt_id, relation, name, artifact)
);
CREATE INDEX lineage_by_artifact ON lineage_edges (artifact, relation);

CREATE TABLE events (
    attempt_id TEXT NOT NULL REFERENCES attempts (id),
    seq        BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    PRIMARY KEY (attempt_id, seq)
);

CREATE TABLE metrics (
    attempt_id TEXT NOT NULL REFERENCES attempts (id),
    seq        BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    step       BIGINT,
    name       TEXT NOT NULL,
    value      DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (attempt_id, seq)
);
