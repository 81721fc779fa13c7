-- The durable scheduler (issue #11): time-driven work lives here, survives restarts, and
-- runs once across any number of service processes (homemonitor.scheduler; docs/scheduler.md).
--
-- One row per job. A recurring job is registered by every process at start under its
-- name with key '' (idempotent: ON CONFLICT), and `every` says how often it runs; a
-- one-off job has `every` NULL and a key of its caller's choosing (an idempotency key:
-- "escalate alert 42, step 1" is scheduled once however often it is asked for).
--   due_at     when it runs next (on the scheduler's clock, which tests can drive)
--   status     'scheduled'; a one-off job that ran becomes 'done', one that failed
--              max_attempts times in a row 'dead' (kept, with its error, for a person)
--   failures   failed runs in a row since the last success (the retry backoff's exponent)
--   last_error the error's class (and SQLSTATE): never a message, which could hold data
-- A process claims a due row with FOR UPDATE SKIP LOCKED and keeps the row lock while the
-- job runs, in the transaction that then moves due_at: a second process skips it, and a
-- process that dies mid-job lets go of it when its connection ends.
CREATE TABLE scheduled_jobs (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL,
    key           text NOT NULL DEFAULT '',
    every         interval CHECK (every > interval '0'),
    due_at        timestamptz NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    status        text NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'done', 'dead')),
    max_attempts  integer NOT NULL DEFAULT 10 CHECK (max_attempts > 0),
    failures      integer NOT NULL DEFAULT 0,
    runs          bigint NOT NULL DEFAULT 0,
    last_run_at   timestamptz,
    last_error    text,
    last_error_at timestamptz,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (name, key),
    CONSTRAINT scheduled_jobs_recurring_never_ends CHECK (every IS NULL OR status = 'scheduled')
);
CREATE INDEX scheduled_jobs_due ON scheduled_jobs (due_at) WHERE status = 'scheduled';

-- When a cleared, non-latching episode resolves by itself (cleared_at + the rule's
-- resolve_after_hours), written with the episode by the batch, so the scheduler's due job
-- finds it without reading every plan. NULL for latching episodes, for every other
-- status, and for episodes that cleared before this migration (those resolve with the
-- patient's next reading, as they did before).
ALTER TABLE alerts ADD COLUMN resolve_due_at timestamptz;
CREATE INDEX alerts_cleared_resolve_due ON alerts (resolve_due_at) WHERE status = 'cleared';

-- Retention of the access log by time (its other indexes lead with a patient or clinician).
CREATE INDEX access_log_time ON access_log (at);
