"""The one place that reaches inside aiomqtt 2.5: manual acknowledgement of QoS 1 messages.

aiomqtt 2.5 acknowledges a QoS 1 message the moment it enters its queue, before our
code has seen it, let alone committed it. It has no public API to change that, but the
paho client it wraps does (``manual_ack_set`` / ``ack``; aiomqtt issue #345, draft PR
#346). Everything that depends on aiomqtt's private attributes is in this module, with
a test (``tests/test_ack_after_commit.py``) that fails if an upgrade breaks it.

Message ids are only meaningful on the connection that delivered them: after a
reconnect the broker redelivers unacknowledged messages with new ids, so an ack for an
old connection's message must be dropped, never sent on the new one.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

_PUBACK = struct.Struct("!BBH")


def enable_manual_ack(client: aiomqtt.Client) -> None:
    """Make ``client`` leave PUBACKs to :func:`ack`. Call before connecting."""
    _paho(client).manual_ack_set(True)


def ack(client: aiomqtt.Client, mid: int, qos: int) -> bool:
    """Send the PUBACK for message ``mid``; False when the connection is gone."""
    if qos == 0:
        return True
    return bool(_paho(client).ack(mid, qos) == paho.MQTT_ERR_SUCCESS)


def ack_all(client: aiomqtt.Client, mids: list[int]) -> bool:
    """PUBACK QoS 1 messages ``mids`` (in this order) with one write; False if disconnected."""
    if not mids:
        return True
    packets = b"".join(_PUBACK.pack(0x40, 2, mid) for mid in mids)  # what paho's ack() sends
    return bool(_paho(client)._packet_queue(0x40, packets, 0, 1) == paho.MQTT_ERR_SUCCESS)


def queue(client: aiomqtt.Client) -> asyncio.Queue[aiomqtt.Message]:
    """aiomqtt's incoming queue, drained without a task per message."""
    q: asyncio.Queue[aiomqtt.Message] = client._queue
    return q


def disconnected(client: aiomqtt.Client) -> asyncio.Future[None]:
    """A future that completes when ``client`` loses its connection."""
    fut: asyncio.Future[None] = client._disconnected
    return fut


def _paho(client: aiomqtt.Client) -> Any:
    return client._client
