-- Hourly trend per patient and metric. On plain PostgreSQL a view over readings; when
-- TimescaleDB is present, migration timescaledb/0001 replaces it with a continuous
-- aggregate of the same name and columns, so queries are the same in both modes.
CREATE VIEW readings_hourly AS
SELECT patient_id,
       metric,
       date_bin('1 hour', measured_at, TIMESTAMPTZ '2000-01-01') AS bucket,
       count(*)           AS n,
       avg(systolic)      AS systolic,
       avg(diastolic)     AS diastolic,
       avg(heart_rate)    AS heart_rate,
       avg(body_weight)   AS body_weight,
       avg(spo2)          AS spo2,
       min(spo2)          AS spo2_min,
       max(systolic)      AS systolic_max
FROM readings
GROUP BY patient_id, metric, bucket;
