-- What the measuring device said about each reading (homemonitor.contract.readings.Quality:
-- body_movement, cuff_loose, low_perfusion, ...), beside the service's own clock flags.
-- Empty for nearly every reading, and for every reading stored before this column.
--
-- On TimescaleDB this runs on the hypertable, compressed chunks included: a column with a
-- constant default is added to the hypertable and its compressed chunks without
-- rewriting or decompressing them (TimescaleDB >= 2.6; checked on 2.28.3 by
-- tests/test_timescaledb.py). On PostgreSQL it is a catalogue change (PostgreSQL >= 11
-- stores a constant default once; no table rewrite).
ALTER TABLE readings ADD COLUMN IF NOT EXISTS quality text[] NOT NULL DEFAULT '{}';
