-- Readings: one row per measurement, canonical units, idempotent on its natural key
-- (a device cannot measure the same metric twice at the same instant), so a redelivered
-- or re-sent message is stored once. The key includes the time column, as a TimescaleDB
-- hypertable requires.
CREATE TABLE readings (
    device_id     text NOT NULL,
    metric        text NOT NULL,
    measured_at   timestamptz NOT NULL,
    patient_id    text NOT NULL,
    received_at   timestamptz NOT NULL,
    stored_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    systolic      double precision,
    diastolic     double precision,
    mean_arterial double precision,
    heart_rate    double precision,
    body_weight   double precision,
    spo2          double precision,
    flags         text[] NOT NULL DEFAULT '{}',
    source        text NOT NULL,
    gateway_id    text,
    message_id    text,
    PRIMARY KEY (device_id, metric, measured_at)
);
CREATE INDEX readings_patient_time ON readings (patient_id, measured_at DESC);

-- Everything that could not be stored as a reading, with why and the raw bytes.
CREATE TABLE quarantine (
    id             bigserial PRIMARY KEY,
    received_at    timestamptz NOT NULL,
    topic          text NOT NULL,
    gateway_id     text,
    reason         text NOT NULL,
    detail         text NOT NULL,
    item_index     integer NOT NULL DEFAULT -1,  -- -1: the whole message
    device_id      text,
    payload        bytea NOT NULL,
    payload_sha256 bytea NOT NULL,
    UNIQUE (payload_sha256, item_index)
);
CREATE INDEX quarantine_reason_time ON quarantine (reason, received_at DESC);
