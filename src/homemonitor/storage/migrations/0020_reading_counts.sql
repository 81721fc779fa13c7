-- How many readings of each patient have been stored, kept by the statement that stores
-- them (homemonitor.storage.transaction, the one place readings are written).
--
-- A worker keeps the stored readings of the patients it evaluated (its history cache,
-- homemonitor.rules.histories). An entry may be used only while it is exactly what the
-- database holds. Until now every batch asked the database to COUNT each cached patient's
-- readings over the entry's whole range: an index range scan of about a hundred rows per
-- patient, the largest cost of a templates batch in PostgreSQL (about 35 us per patient
-- on the bench's data, more than inserting the reading). Now the insert statement adds
-- its new readings to this count, under the same row lock another writer's insert takes,
-- and returns the new total: an entry is exact when its total plus this batch's new
-- readings is that total. One key update per patient per batch instead of a range scan.
--
-- Only how the count changes means anything: it starts at zero with this migration, not
-- at the readings already stored, so no existing row is read. A row is made by the first
-- batch that stores a reading of the patient.
CREATE TABLE reading_counts (
    patient_id text PRIMARY KEY,
    stored     bigint NOT NULL
) WITH (fillfactor = 50);  -- room on the page: every update stays a heap-only tuple

COMMENT ON TABLE reading_counts IS
    'Readings stored per patient since migration 0020, by homemonitor''s batch insert; '
    'workers compare it with what their history caches hold. Write readings only through '
    'homemonitor, or restart the workers after writing readings by hand.';
