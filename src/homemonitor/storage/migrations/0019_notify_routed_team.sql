-- The team an alert was routed to hears how it ends (a defect of 0018).
--
-- 0018 gave an event's notifications to the alert's own team and to the team its
-- `details.to.team` addresses. Events that address nobody (acknowledged, resolved,
-- snoozed, snooze_ended, cleared, auto_resolved, severity_changed) therefore reached the
-- alert's own team only: the on-call team an out-of-hours alert woke up (alerts.routed_to)
-- was never told through its webhook or alert topic that somebody acknowledged or resolved
-- it, though its clinicians see the alert, and all of its changes, in their list.
--
-- Now the team an alert is routed to FOLLOWS it: every event of the alert that does not
-- already address that team (nor is that team the alert's own) also gets one outbox row
-- per channel of that team that follows alerts for its systems: its webhook and its MQTT
-- alert topic. Not its email (an email addresses clinicians, which such an event does
-- not) and not feedback (the patient hears from their own team). The alert's own team and
-- the addressed team keep exactly what 0018 gave them. docs/notifications.md, "Which
-- team's channels". The idempotency key of the routed team's rows is
-- "<event id>.<channel>.<team>", as for any team other than the alert's own.

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
    CROSS JOIN LATERAL (
        SELECT CASE WHEN a.routed_to IS DISTINCT FROM a.care_team_id
                     AND a.routed_to IS DISTINCT FROM x.other
                    THEN a.routed_to END AS follower
    ) AS f
    CROSS JOIN LATERAL (
        VALUES (a.care_team_id, 'own'), (x.other, 'addressed'), (f.follower, 'follows')
    ) AS t(team, role)
    JOIN notification_channels AS c ON c.care_team_id = t.team
    WHERE e.kind <> 'notified'
      AND e.kind = ANY (notify_kinds(c.channel))
      AND CASE t.role
          WHEN 'own' THEN x.other IS NULL OR c.channel <> 'email'
          WHEN 'addressed' THEN c.channel <> 'feedback'
          ELSE c.channel IN ('webhook', 'mqtt')
      END
    ORDER BY e.id, t.role = 'own' DESC, t.role, c.channel;
    IF EXISTS (SELECT 1 FROM new_events WHERE kind <> 'notified') THEN
        PERFORM pg_notify('homemonitor_alert_events', '');
    END IF;
    RETURN NULL;
END
$$;
