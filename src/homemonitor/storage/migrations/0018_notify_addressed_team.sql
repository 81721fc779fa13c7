-- Notifications reach the team an event addresses, and a snooze's end (issue #11 parts 5–6).
--
-- 0014's trigger wrote outbox rows for the channels of the alert's OWN care team only, so
-- an alert routed out of hours, or escalated to the out-of-hours team, never reached that
-- team's webhook or alert topic, and its clinicians were emailed through the alert team's
-- email setting. Now an event whose `details.to.team` names another team (routing writes
-- it on opened/reopened, escalation on escalated, assignment on assigned) also gets one
-- outbox row per channel of THAT team: its webhook, its MQTT alert topic, its email (to
-- the clinicians the event names, per its own email setting). The alert's team keeps the
-- channels that follow its alerts for its systems (webhook, MQTT alert topic) and the
-- patient's feedback (the patient's own team speaks to the patient, once); its email does
-- not go to another team's clinicians. docs/notifications.md, "Which team's channels".
--
-- One delivery is (event, team, channel); the idempotency key stays "<event id>.<channel>"
-- for the alert's own team (rows written before this migration keep their keys) and is
-- "<event id>.<channel>.<team>" for the addressed team (homemonitor.notify.message).

ALTER TABLE outbox
    DROP CONSTRAINT outbox_event_id_channel_key,
    ADD CONSTRAINT outbox_event_id_care_team_id_channel_key UNIQUE (event_id, care_team_id, channel);

-- `snooze_ended` now notifies what `snoozed` notifies: a receiver that was told "snoozed"
-- is told when it ends (at its time, or at once when the alert became urgent).
CREATE OR REPLACE FUNCTION notify_kinds(channel text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE channel
        WHEN 'feedback' THEN ARRAY['opened', 'reopened']
        WHEN 'email' THEN ARRAY['opened', 'reopened', 'severity_changed', 'escalated', 'assigned']
        ELSE ARRAY['opened', 'reopened', 'severity_changed', 'cleared', 'auto_resolved',
                   'acknowledged', 'resolved', 'assigned', 'escalated', 'snoozed',
                   'snooze_ended']
    END
$$;

-- Still once per INSERT statement, one join: each event is paired with its alert's team
-- and, when `to.team` names another, with that team too; then with those teams' channels.
-- `notified` events (the notifier's own record, most of the table) never get a row.
CREATE OR REPLACE FUNCTION alert_events_to_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (event_id, alert_id, care_team_id, channel)
    SELECT e.id, e.alert_id, t.team, c.channel
    FROM new_events AS e
    JOIN alerts AS a ON a.id = e.alert_id
    CROSS JOIN LATERAL (
        SELECT nullif(e.details -> 'to' ->> 'team', a.care_team_id) AS other
    ) AS x
    CROSS JOIN LATERAL (VALUES (a.care_team_id, true), (x.other, false)) AS t(team, own)
    JOIN notification_channels AS c ON c.care_team_id = t.team
    WHERE e.kind <> 'notified'
      AND e.kind = ANY (notify_kinds(c.channel))
      AND (x.other IS NULL
           OR CASE WHEN t.own THEN c.channel <> 'email' ELSE c.channel <> 'feedback' END)
    ORDER BY e.id, t.own DESC, c.channel;
    IF EXISTS (SELECT 1 FROM new_events WHERE kind <> 'notified') THEN
        PERFORM pg_notify('homemonitor_alert_events', '');
    END IF;
    RETURN NULL;
END
$$;
