-- Missing-data and adherence rules (issue #11 part 2; homemonitor.alerts.silence,
-- docs/care-plans.md "Missing data and adherence").

-- A missing-data episode is an alert like any other: rule `missing.<metric>` (the patient
-- stopped measuring a metric the plan expects) or `gateway.silent` (nothing at all has
-- come from the patient's home gateway), kind 'missing', through the same tables and
-- events, so routing, escalation and notifications apply to it unchanged.
ALTER TABLE alerts DROP CONSTRAINT alerts_kind_check,
    ADD CONSTRAINT alerts_kind_check
        CHECK (kind IN ('threshold', 'change', 'average', 'baseline', 'score', 'missing'));
-- The silence job's question "was this silence alerted already?" (opening_measured_at is
-- when the silence began), whatever became of the episode; missing-data rows only.
CREATE INDEX alerts_silence ON alerts (patient_id, rule, opening_measured_at)
    WHERE kind = 'missing';

-- A gateway's last contact: when the service last received a message on its topics,
-- stored or quarantined (the contract has no heartbeat; received_at, the service's clock).
-- Each worker keeps the latest per gateway in memory and writes them every 30 s, off the
-- batch path (homemonitor.ingest.contacts). NULL: no message since this migration (the
-- silence job then uses the received_at of the patient's latest reading).
ALTER TABLE gateways ADD COLUMN last_seen_at timestamptz;

-- Pauses: planned absences and admissions, during which no missing-data alert is raised;
-- the silence is counted again from a pause's end. `source` says who keeps it: the
-- registry file (each apply replaces a described patient's registry pauses) or the API
-- (a clinician of the patient's team: created_by).
CREATE TABLE patient_pauses (
    id          bigserial PRIMARY KEY,
    patient_id  text NOT NULL REFERENCES patients (id),
    during      tstzrange NOT NULL CHECK (NOT isempty(during) AND NOT lower_inf(during)),
    reason      text NOT NULL CHECK (reason IN ('absence', 'admission', 'other')),
    source      text NOT NULL CHECK (source IN ('registry', 'api')),
    created_by  text REFERENCES clinicians (id),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT patient_pauses_api_has_author CHECK ((source = 'api') = (created_by IS NOT NULL))
);
CREATE INDEX patient_pauses_patient ON patient_pauses (patient_id, upper(during));
