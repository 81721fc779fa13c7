-- Applied only when the timescaledb extension is available (TimescaleDB 2.x API):
-- readings becomes a hypertable with 7-day chunks. This part works under the Apache
-- licence too; compression, policies and continuous aggregates (0002) need the
-- community licence and are skipped, with a log line, when it is not active.
CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('readings', 'measured_at',
                         chunk_time_interval => INTERVAL '7 days',
                         if_not_exists => TRUE, migrate_data => TRUE);
