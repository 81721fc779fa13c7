-- Compression after 30 days, retention ({retention}, a setting), and readings_hourly as a
-- continuous aggregate with the same columns as the plain view it replaces (0004), so
-- queries are the same in both modes. Needs timescaledb.license = 'timescale'.
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id, metric',  -- the unique key's columns, so
    -- ON CONFLICT checks stay cheap; a device belongs to one patient at a time anyway
    timescaledb.compress_orderby = 'measured_at DESC'
);
SELECT add_compression_policy('readings', INTERVAL '30 days', if_not_exists => TRUE);
SELECT add_retention_policy('readings', INTERVAL '{retention}', if_not_exists => TRUE);

DROP VIEW readings_hourly;
CREATE MATERIALIZED VIEW readings_hourly
WITH (timescaledb.continuous) AS
SELECT patient_id,
       metric,
       time_bucket(INTERVAL '1 hour', measured_at) AS bucket,
       count(*)           AS n,
       avg(systolic)      AS systolic,
       avg(diastolic)     AS diastolic,
       avg(heart_rate)    AS heart_rate,
       avg(body_weight)   AS body_weight,
       avg(spo2)          AS spo2,
       min(spo2)          AS spo2_min,
       max(systolic)      AS systolic_max
FROM readings
GROUP BY patient_id, metric, bucket
WITH NO DATA;

SELECT add_continuous_aggregate_policy('readings_hourly',
    start_offset => INTERVAL '3 days',
    end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes',
    if_not_exists => TRUE);
-- Real-time aggregation: the newest hour is computed from raw rows at query time.
ALTER MATERIALIZED VIEW readings_hourly SET (timescaledb.materialized_only = false);
