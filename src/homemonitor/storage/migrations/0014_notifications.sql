-- Notifications (issue #11 part 6): a transactional outbox that follows alert_events.
--
-- Every alert change writes an alert_events row, on every path (the worker's batch, the
-- scheduler's jobs, a clinician through the API). The trigger below turns those rows into
-- outbox rows, one per channel the alert's care team has configured and that the event's
-- kind is for, in the SAME statement and therefore the same transaction: no code path
-- can change an alert and forget to notify, and a rolled-back change notifies nobody.
-- The notifier (homemonitor.notify) delivers each outbox row at least once, with the
-- idempotency key "<event id>.<channel>", and records each outcome as a `notified` event,
-- which the trigger ignores (no loops). docs/notifications.md.

-- Who an email goes to (the `lifecycle` work stores it from the registry's clinicians;
-- IF NOT EXISTS: whichever of its migration and this one runs first adds it).
ALTER TABLE clinicians ADD COLUMN IF NOT EXISTS email text;

-- A care team's channels, from the registry's `notifications:` (homemonitor.notify.config).
--   channel  webhook | email | mqtt (the alert topic) | feedback (the patient's gateway)
--   config   the channel's settings: url, secret_file, include_values, texts; never a secret
CREATE TABLE notification_channels (
    care_team_id text NOT NULL REFERENCES care_teams (id),
    channel      text NOT NULL CHECK (channel IN ('webhook', 'email', 'mqtt', 'feedback')),
    config       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    PRIMARY KEY (care_team_id, channel)
);

-- One row per (event, channel): what to deliver, not how it reads (the notifier renders
-- it from the event and the alert when it delivers, as the channel allows).
--   status          pending → delivered; or dead after max attempts (a dead letter, until
--                   `homemonitor notifications dead-letters replay`); skipped: nothing to
--                   send (an email with no address among those it is for)
--   attempts        deliveries tried so far; next_attempt_at NULL means at once
--   last_error      the failure's class or HTTP status, never a message or a body
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    event_id        bigint NOT NULL REFERENCES alert_events (id),
    alert_id        bigint NOT NULL REFERENCES alerts (id),
    care_team_id    text NOT NULL REFERENCES care_teams (id),
    channel         text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead', 'skipped')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at    timestamptz,
    last_error      text,
    last_error_at   timestamptz,
    replays         integer NOT NULL DEFAULT 0,
    last_replayed_by text,
    UNIQUE (event_id, channel)
);
CREATE INDEX outbox_pending ON outbox (next_attempt_at NULLS FIRST, id) WHERE status = 'pending';
CREATE INDEX outbox_dead ON outbox (id) WHERE status = 'dead';

-- Which event kinds each channel is for. `pending` and `withdrawn` (a breach waiting for
-- its retake, and one the retake showed to be an artefact) are no alert yet; `updated`
-- (one more breach, same severity) and `commented` are for the inbox, not for a push;
-- `notified` is the notifier's own record.
CREATE FUNCTION notify_kinds(channel text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE channel
        WHEN 'feedback' THEN ARRAY['opened', 'reopened']
        WHEN 'email' THEN ARRAY['opened', 'reopened', 'severity_changed', 'escalated', 'assigned']
        ELSE ARRAY['opened', 'reopened', 'severity_changed', 'cleared', 'auto_resolved',
                   'acknowledged', 'resolved', 'assigned', 'escalated', 'snoozed']
    END
$$;

-- Once per INSERT statement (the batch writes all its events in one): the outbox rows of
-- the new events, in one join, and one wake-up for the notifier and the live streams
-- (PostgreSQL delivers it at commit, folds repeats within a transaction, and drops it on
-- rollback). The statement-level form with a transition table costs a batch one join, not
-- a trigger call per event (see docs/notifications.md, "What it costs the worker").
CREATE FUNCTION alert_events_to_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (event_id, alert_id, care_team_id, channel)
    SELECT e.id, e.alert_id, a.care_team_id, c.channel
    FROM new_events AS e
    JOIN alerts AS a ON a.id = e.alert_id
    JOIN notification_channels AS c ON c.care_team_id = a.care_team_id
    WHERE e.kind = ANY (notify_kinds(c.channel))
    ORDER BY e.id, c.channel;
    IF EXISTS (SELECT 1 FROM new_events WHERE kind <> 'notified') THEN
        PERFORM pg_notify('homemonitor_alert_events', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER alert_events_outbox
    AFTER INSERT ON alert_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION alert_events_to_outbox();
