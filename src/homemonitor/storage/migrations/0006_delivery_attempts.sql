-- Messages the broker delivered again (MQTT DUP flag) and that are not stored yet, keyed
-- like quarantine.payload_sha256: sha256(topic, NUL, payload). A worker counts a delivery
-- here, in a transaction of its own, before it processes a redelivered message; the
-- commit that stores or quarantines the message deletes the row. A message delivered more
-- than HOMEMONITOR_MAX_DELIVERY_ATTEMPTS times is quarantined as repeated_failure without
-- being decoded again, so a message that kills the worker cannot do so forever. First
-- deliveries never touch this table. No payload and no patient data: a hash and counts.
CREATE TABLE delivery_attempts (
    message_sha256 bytea PRIMARY KEY,
    deliveries     integer NOT NULL,  -- deliveries so far, the first (not recorded) included
    first_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX delivery_attempts_last_at ON delivery_attempts (last_at);
