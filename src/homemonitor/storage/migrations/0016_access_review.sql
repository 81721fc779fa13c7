-- The access-log review and the follow-up of the web app (issue #12).
--
-- Patientdatalagen (2008:355) 4 kap. 3 § and HSLF-FS 2016:40 ask the care provider to check
-- access to patient records systematically and repeatedly, and to be able to show it. A
-- reviewer (registry role `reviewer`) does that in the web app: a check names what was
-- looked at (a patient's log, a clinician's log, or a random sample of reads in a period),
-- keeps the entries it covered, and ends with what was checked and the outcome.
--
--   scope       'sample' (random reads of the period), 'patient' or 'clinician' (subject_id)
--   period      the reads the check covers, [from, to)
--   status      'open' until the reviewer records the outcome; 'done' after (never reopened:
--               a second look is a new check)
--   checked     what the reviewer checked (free text: "care relation in the journal", ...)
--   outcome     'no_remarks', 'follow_up' (asked the clinician or their manager) or
--               'unauthorised' (access without a care relation: a matter for the manager)
CREATE TABLE access_checks (
    id           bigserial PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    reviewer_id  text NOT NULL REFERENCES clinicians (id),
    scope        text NOT NULL CHECK (scope IN ('sample', 'patient', 'clinician')),
    subject_id   text,
    period       tstzrange NOT NULL CHECK (NOT isempty(period)),
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done')),
    checked      text NOT NULL DEFAULT '',
    outcome      text CHECK (outcome IN ('no_remarks', 'follow_up', 'unauthorised')),
    note         text NOT NULL DEFAULT '',
    closed_at    timestamptz,
    CONSTRAINT access_checks_subject_named CHECK ((scope = 'sample') = (subject_id IS NULL)),
    CONSTRAINT access_checks_done_has_outcome CHECK (
        (status = 'done') = (outcome IS NOT NULL AND closed_at IS NOT NULL))
);
CREATE INDEX access_checks_time ON access_checks (created_at DESC);

-- The entries a check covered, copied from access_log as they were: the access log is
-- pruned by retention (HOMEMONITOR_ACCESS_LOG_RETENTION) and the record of a check must
-- still say what it looked at. No foreign key to access_log for the same reason.
CREATE TABLE access_check_items (
    check_id      bigint NOT NULL REFERENCES access_checks (id),
    access_log_id bigint NOT NULL,
    at            timestamptz NOT NULL,
    clinician_id  text NOT NULL,
    patient_id    text,
    action        text NOT NULL,
    outcome       text NOT NULL,
    requested_id  text,
    PRIMARY KEY (check_id, access_log_id)
);
