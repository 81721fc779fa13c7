-- Alert episodes: one open episode per patient and rule, guaranteed here and not by a
-- lock in a worker. Further breaches update it; a clinician acknowledges and resolves it.
CREATE TABLE alerts (
    id                  bigserial PRIMARY KEY,
    patient_id          text NOT NULL REFERENCES patients (id),
    care_team_id        text NOT NULL REFERENCES care_teams (id),
    rule                text NOT NULL,           -- '<quantity>.<high|low>'
    quantity            text NOT NULL,
    direction           text NOT NULL CHECK (direction IN ('high', 'low')),
    severity            text NOT NULL CHECK (severity IN ('warning', 'urgent')),
    status              text NOT NULL DEFAULT 'open'
                        CHECK (status IN ('open', 'acknowledged', 'resolved')),
    plan_version        integer NOT NULL,
    threshold           double precision NOT NULL,
    opened_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    opening_device_id   text NOT NULL,
    opening_metric      text NOT NULL,
    opening_measured_at timestamptz NOT NULL,
    opening_value       double precision NOT NULL,
    worst_value         double precision NOT NULL,
    last_measured_at    timestamptz NOT NULL,
    breach_count        integer NOT NULL DEFAULT 1,
    acknowledged_at     timestamptz,
    acknowledged_by     text REFERENCES clinicians (id),
    resolved_at         timestamptz,
    resolved_by         text REFERENCES clinicians (id),
    resolution_note     text
);
CREATE UNIQUE INDEX alerts_one_open_per_rule ON alerts (patient_id, rule)
    WHERE status <> 'resolved';
CREATE INDEX alerts_team_status ON alerts (care_team_id, status, opened_at DESC);

-- Who read which patient's data, what, and when.
CREATE TABLE access_log (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    clinician_id text NOT NULL,
    patient_id   text NOT NULL,
    action       text NOT NULL
);
CREATE INDEX access_log_patient_time ON access_log (patient_id, at DESC);
