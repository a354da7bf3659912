-- Leases on stage executions, by fingerprint, so engines sharing one database never run the same
-- work twice. `token` only grows (a fencing token): a write from a holder whose lease was taken
-- over presents an old token and is refused. A released lease keeps its row (expires_at = 0) so
-- tokens never restart.
CREATE TABLE leases (
    fingerprint TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    token       BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX leases_by_holder ON leases (holder);
