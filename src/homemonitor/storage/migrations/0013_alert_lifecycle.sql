-- Alerts reach a person (issue #11 parts 3-5): routing at creation, escalation, clinician
-- actions (assign, comment, snooze, resolve with feedback). docs/alerts.md explains it all.

-- Where a clinician is emailed (notify reads it); the registry's clinicians[].email.
ALTER TABLE clinicians ADD COLUMN email text;

-- A care team's hours and its out-of-hours route, from the registry:
--   working_hours  {"days": ["mon", ...], "start": "08:00", "end": "17:00"} in
--                  Europe/Stockholm; NULL: always staffed (no out-of-hours routing)
--   holidays       extra closed days beyond the Swedish public holidays (the code knows those)
--   out_of_hours   the care team (on-call, mobile team) that takes over when it is closed
--   escalation     {"urgent": [{"after_minutes": 15, "to": "team"}, ...], "warning": [...]}:
--                  per severity, minutes without acknowledgement before each step
-- The out-of-hours reference is checked at commit: a registry may name a team before it
-- describes it.
ALTER TABLE care_teams
    ADD COLUMN working_hours jsonb CHECK (jsonb_typeof(working_hours) = 'object'),
    ADD COLUMN holidays date[] NOT NULL DEFAULT '{}',
    ADD COLUMN out_of_hours text REFERENCES care_teams (id) DEFERRABLE INITIALLY DEFERRED,
    ADD COLUMN escalation jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(escalation) = 'object'),
    ADD CONSTRAINT care_teams_out_of_hours_elsewhere CHECK (out_of_hours <> id);

-- An alert's routing and its clinicians' actions:
--   assigned_to       who owns it: the patient's care contact at creation, then whoever
--                     a clinician assigns it to
--   routed_to         the out-of-hours team it was routed or escalated to (that team sees it)
--   escalation_level  who was addressed last: care_contact, team or out_of_hours
--   escalation_chain  which escalation chain is current (a worse severity starts another);
--                     a scheduled step of an older chain does nothing
--   snoozed_until     "not now" (warnings only, at most 24 h): escalation waits until then
--   actionable        the resolving clinician's answer: did this alert lead to an action?
ALTER TABLE alerts
    ADD COLUMN assigned_to text REFERENCES clinicians (id),
    ADD COLUMN routed_to text REFERENCES care_teams (id),
    ADD COLUMN escalation_level text
        CHECK (escalation_level IN ('care_contact', 'team', 'out_of_hours')),
    ADD COLUMN escalation_chain integer NOT NULL DEFAULT 0,
    ADD COLUMN snoozed_until timestamptz,
    ADD COLUMN actionable boolean;
-- The alerts an out-of-hours team sees (the list query's second half).
CREATE INDEX alerts_routed_status ON alerts (routed_to, status, opened_at DESC)
    WHERE routed_to IS NOT NULL;

-- One more kind of event: a snooze that ended (by itself at its time, actor scheduler; or
-- because the alert became urgent, actor rule). The full list, as the design asks.
ALTER TABLE alert_events DROP CONSTRAINT alert_events_kind_check,
    ADD CONSTRAINT alert_events_kind_check CHECK (kind IN (
        'pending', 'withdrawn', 'opened', 'severity_changed', 'updated', 'cleared',
        'reopened', 'auto_resolved', 'acknowledged', 'resolved', 'assigned', 'notified',
        'commented', 'escalated', 'snoozed', 'snooze_ended'));
