-- The rules engine (issue #10): whole care plans, episodes of every rule kind that explain
-- themselves, and an event for every transition of an alert.

-- A care plan is now the whole CarePlanSpec (template, personal, overrides, disabled, rules,
-- thresholds, current_hours) as the registry and the API take it. An existing row held only
-- absolute bounds; as a spec that is {"thresholds": <bounds>}, which resolves to the same
-- threshold rules it always meant. `thresholds` stays, but only as a read-only view of
-- the plan's legacy bounds (a generated column): reports and hand-written queries that read
-- it keep working, nothing can write it apart from the plan, so the two can never disagree.
ALTER TABLE care_plans ADD COLUMN plan jsonb;
UPDATE care_plans SET plan = jsonb_build_object('thresholds', thresholds);
ALTER TABLE care_plans ALTER COLUMN plan SET NOT NULL,
    ADD CONSTRAINT care_plans_plan_is_an_object CHECK (jsonb_typeof(plan) = 'object');
ALTER TABLE care_plans DROP COLUMN thresholds;
ALTER TABLE care_plans ADD COLUMN thresholds jsonb
    GENERATED ALWAYS AS (coalesce(plan -> 'thresholds', '{}'::jsonb)) STORED;

-- Device quality flags (readings.quality) are evaluated by the rules engine. Migration 0009
-- adds this column, with the same definition; repeated here (a no-op where 0009 ran) so
-- that the engine's history query never depends on which branch brought it.
ALTER TABLE readings ADD COLUMN IF NOT EXISTS quality text[] NOT NULL DEFAULT '{}';

-- Alerts of every rule kind. An episode's life:
--   pending       a breach waiting for a retake until due_at (the rule's retake_minutes)
--   open          raised; acknowledged: a clinician has seen it
--   cleared       a latching episode whose rule cleared: it stays until a clinician resolves it
--   resolved      by a clinician (resolved_by, resolution_note)
--   auto_resolved a non-latching episode that cleared by itself
--   withdrawn     a pending breach that a normal retake showed to be an artefact (no alert)
-- resolved_at is when an episode left the active statuses, whichever way.
ALTER TABLE alerts
    ADD COLUMN kind text NOT NULL DEFAULT 'threshold'
        CHECK (kind IN ('threshold', 'change', 'average', 'baseline', 'score')),
    ADD COLUMN peak_severity text CHECK (peak_severity IN ('warning', 'urgent')),
    ADD COLUMN due_at timestamptz,
    ADD COLUMN cleared_at timestamptz,
    -- The measured_at of the latest evaluation point that moved this episode: an older point
    -- (a late reading) never moves it again, so redelivery and batching change no outcome.
    ADD COLUMN evaluated_at timestamptz,
    -- {"sentence": ..., "facts": {...}, "plan_version": n}: why it opened, and why it is
    -- as it is now (the latest transition's assessment).
    ADD COLUMN opening_explanation jsonb,
    ADD COLUMN latest_explanation jsonb,
    -- What the engine threads from one evaluation point to the next besides the columns
    -- (consecutive clear readings, re-armed after a resolution, ...); its own format.
    ADD COLUMN state jsonb NOT NULL DEFAULT '{}',
    ALTER COLUMN quantity DROP NOT NULL,    -- an average has several, a score none
    ALTER COLUMN direction DROP NOT NULL,   -- a score has none
    ALTER COLUMN threshold DROP NOT NULL,   -- a baseline's limit is the patient's own
    ALTER COLUMN opening_value DROP NOT NULL,
    ALTER COLUMN worst_value DROP NOT NULL,
    DROP CONSTRAINT alerts_direction_check,
    ADD CONSTRAINT alerts_direction_check CHECK (direction IN ('high', 'low', 'rise', 'fall')),
    DROP CONSTRAINT alerts_status_check,
    ADD CONSTRAINT alerts_status_check CHECK (status IN (
        'pending', 'open', 'acknowledged', 'cleared', 'resolved', 'auto_resolved', 'withdrawn')),
    ADD CONSTRAINT alerts_pending_has_due_at CHECK (status <> 'pending' OR due_at IS NOT NULL);

UPDATE alerts SET
    peak_severity = severity,
    evaluated_at = last_measured_at,
    opening_explanation = jsonb_build_object(
        'sentence', format('%s %s, %s bound %s; plan v%s',
                           quantity, opening_value,
                           CASE direction WHEN 'high' THEN 'at or above the' ELSE 'at or below the' END
                               || ' ' || severity, threshold, plan_version),
        'facts', jsonb_build_object('value', opening_value, 'threshold', threshold),
        'plan_version', plan_version),
    latest_explanation = jsonb_build_object(
        'sentence', format('%s worst %s, %s bound %s; plan v%s',
                           quantity, worst_value,
                           CASE direction WHEN 'high' THEN 'at or above the' ELSE 'at or below the' END
                               || ' ' || severity, threshold, plan_version),
        'facts', jsonb_build_object('value', worst_value, 'threshold', threshold),
        'plan_version', plan_version);
ALTER TABLE alerts ALTER COLUMN peak_severity SET NOT NULL,
    ALTER COLUMN evaluated_at SET NOT NULL,
    ALTER COLUMN opening_explanation SET NOT NULL,
    ALTER COLUMN latest_explanation SET NOT NULL;

-- One active episode per patient and rule, over every status that is not an end.
DROP INDEX alerts_one_open_per_rule;
CREATE UNIQUE INDEX alerts_one_active_per_rule ON alerts (patient_id, rule)
    WHERE status IN ('pending', 'open', 'acknowledged', 'cleared');
-- The last episode a clinician resolved, per rule: when the same rule may alert again.
CREATE INDEX alerts_last_resolved ON alerts (patient_id, rule, resolved_at DESC)
    WHERE status = 'resolved';

-- Every transition of an alert, with who made it: the engine (`rule`), a clinician, or the
-- scheduler (issue #11: time-driven rules, escalation). Kinds are issue #11's list; this
-- migration writes pending, withdrawn, opened, severity_changed, updated, cleared,
-- reopened (a cleared episode breaching again), auto_resolved, acknowledged and resolved.
CREATE TABLE alert_events (
    id           bigserial PRIMARY KEY,
    alert_id     bigint NOT NULL REFERENCES alerts (id),
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind         text NOT NULL CHECK (kind IN (
        'pending', 'withdrawn', 'opened', 'severity_changed', 'updated', 'cleared',
        'reopened', 'auto_resolved', 'acknowledged', 'resolved', 'assigned', 'notified',
        'commented', 'escalated', 'snoozed')),
    actor        text NOT NULL CHECK (actor IN ('rule', 'clinician', 'scheduler')),
    clinician_id text REFERENCES clinicians (id),
    details      jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT alert_events_clinician_named CHECK ((actor = 'clinician') = (clinician_id IS NOT NULL))
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, id);

-- The history of the alerts there were before this migration, as far as their rows tell it.
INSERT INTO alert_events (alert_id, at, kind, actor, clinician_id, details)
SELECT id, opened_at, 'opened', 'rule', NULL,
       jsonb_build_object('severity', severity, 'measured_at', opening_measured_at,
                          'migrated', true)
FROM alerts
UNION ALL
SELECT id, acknowledged_at, 'acknowledged', 'clinician', acknowledged_by,
       jsonb_build_object('migrated', true)
FROM alerts WHERE acknowledged_at IS NOT NULL AND acknowledged_by IS NOT NULL
UNION ALL
SELECT id, resolved_at, 'resolved', 'clinician', resolved_by,
       jsonb_build_object('migrated', true)
FROM alerts WHERE status = 'resolved' AND resolved_by IS NOT NULL
ORDER BY 2;
