-- Denied attempts are access-logged too (HSLF-FS 2016:40 asks care providers to follow
-- up unauthorised access attempts, not only reads). They go into access_log itself, not a
-- table beside it: a review asks "who tried to reach this patient, or anything, and when",
-- and one table answers it in one time-ordered query, under one retention, with the
-- patient's index covering both reads and attempts; a second table would be one more
-- place a review (and the patient's own extract) could forget. Existing rows and readers
-- keep their meaning: every row so far was an allowed read, the default.
--
--   outcome       'allowed' (data was returned) or 'denied' (answered 404: another care
--                 team's alert or patient, or an id that names nothing)
--   requested_id  the id the request named (an alert id or a patient id), as sent; NULL
--                 for a list. A denied row whose id names nothing has no patient_id.
ALTER TABLE access_log
    ADD COLUMN outcome text NOT NULL DEFAULT 'allowed'
        CHECK (outcome IN ('allowed', 'denied')),
    ADD COLUMN requested_id text,
    ALTER COLUMN patient_id DROP NOT NULL,
    ADD CONSTRAINT access_log_names_what_was_asked
        CHECK (patient_id IS NOT NULL OR requested_id IS NOT NULL);

-- The follow-up: denied attempts by time, and one clinician's activity.
CREATE INDEX access_log_denied_time ON access_log (at DESC) WHERE outcome = 'denied';
CREATE INDEX access_log_clinician_time ON access_log (clinician_id, at DESC);
