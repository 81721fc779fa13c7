"""Notifications: the outbox the alert events fill, the notifier that empties it, the channels.

- :mod:`~homemonitor.notify.config`: a care team's ``notifications:`` in the registry.
- :mod:`~homemonitor.notify.outbox`: claiming, recording, dead letters (SQL).
- :mod:`~homemonitor.notify.message`: what each channel is told of an event, and no more.
- :mod:`~homemonitor.notify.channels`: signed webhooks, email, MQTT alert and feedback topics.
- :mod:`~homemonitor.notify.notifier`: the delivery loop beside the scheduler.
- :mod:`~homemonitor.notify.feed`: one ``LISTEN`` per process that wakes the notifier and the
  live streams (``GET /api/v1/alerts/stream``, :mod:`homemonitor.api.stream`).

The outbox rows are written by a trigger on ``alert_events`` (migration 0014), in the
transaction of the alert change itself; docs/notifications.md says the whole of it.
"""
