-- Digests of external inputs (file:// data), keyed by a signature of what `stat` says about
-- them (paths, sizes, modification times, inodes), so unchanged raw data is not hashed again.
CREATE TABLE external_digests (
    uri        TEXT PRIMARY KEY,
    signature  TEXT NOT NULL,
    digest     TEXT NOT NULL,
    checked_at BIGINT NOT NULL
);
