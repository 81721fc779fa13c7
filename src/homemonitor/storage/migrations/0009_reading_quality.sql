-- What the measuring device said about each reading (homemonitor.contract.readings.Quality:
-- body_movement, cuff_loose, low_perfusion, ...), beside the service's own clock flags.
-- Empty for nearly every reading, and for every reading stored before this column.
--
-- On TimescaleDB this runs on the hypertable, compressed chunks included: the column,
-- with its constant default, is added to the hypertable and its compressed chunks without
-- decompressing them (checked on 2.28.3 by tests/test_timescaledb.py: old compressed rows
-- read '{}', a late flagged reading lands in a compressed chunk). On PostgreSQL it is a
-- catalogue change (a constant default is stored once; no table rewrite).
ALTER TABLE readings ADD COLUMN IF NOT EXISTS quality text[] NOT NULL DEFAULT '{}';
