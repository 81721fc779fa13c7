-- readings_hourly reflects every stored reading, however late it arrives (TimescaleDB 2.x).
-- 0002's refresh policy looked only at the last 3 days: a reading stored later than that
-- after its measurement (a gateway's backlog, which the service accepts) or history that
-- was there before the aggregate (migrated from plain PostgreSQL) was never materialised,
-- and once its hour was, it vanished from the trend. The policy now covers the whole
-- history (start_offset NULL). A refresh re-materialises only what was invalidated since
-- the last run: a late INSERT invalidates its own chunk's range, not the whole history.
-- Measured (2 000 patients, 3.65 M readings over a year, 11 months compressed, 2 cores):
-- a run with nothing new 0.01 s; after one late reading 0.03-0.06 s; after a batch that
-- spans 5 days of one chunk 3 s; the first run over history never materialised 150 s.
-- Raw chunks dropped by the retention policy are invalidated too, so the next run removes
-- their hours from the aggregate: it keeps nothing the raw table no longer has.
-- Needs timescaledb.license = 'timescale' (skipped with 0002 under the Apache licence).
SELECT remove_continuous_aggregate_policy('readings_hourly', if_exists => TRUE);
SELECT add_continuous_aggregate_policy('readings_hourly',
    start_offset => NULL,
    end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes');
