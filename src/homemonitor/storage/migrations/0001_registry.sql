-- Care teams, clinicians, patients, devices, bindings and versioned care plans.
-- Patients are opaque ids: no names or personal numbers are stored here.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE care_teams (
    id   text PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE clinicians (
    id           text PRIMARY KEY,
    care_team_id text NOT NULL REFERENCES care_teams (id),
    name         text NOT NULL,
    role         text NOT NULL DEFAULT 'clinician'
);

CREATE TABLE api_tokens (
    token_sha256 bytea PRIMARY KEY,
    clinician_id text NOT NULL REFERENCES clinicians (id),
    label        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE TABLE patients (
    id              text PRIMARY KEY,
    care_team_id    text NOT NULL REFERENCES care_teams (id),
    care_contact_id text REFERENCES clinicians (id),
    condition       text NOT NULL DEFAULT ''
);

CREATE TABLE gateways (
    id text PRIMARY KEY
);

CREATE TABLE devices (
    id    text PRIMARY KEY,
    kind  text NOT NULL,
    model text NOT NULL DEFAULT ''
);

-- A device belongs to at most one patient at any instant.
CREATE TABLE device_bindings (
    device_id  text NOT NULL REFERENCES devices (id),
    patient_id text NOT NULL REFERENCES patients (id),
    valid      tstzrange NOT NULL,
    PRIMARY KEY (device_id, valid),
    EXCLUDE USING gist (device_id WITH =, valid WITH &&)
);

CREATE TABLE care_plans (
    patient_id text NOT NULL REFERENCES patients (id),
    version    integer NOT NULL CHECK (version > 0),
    thresholds jsonb NOT NULL,
    changed_by text REFERENCES clinicians (id),
    reason     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (patient_id, version)
);
