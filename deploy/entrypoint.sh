#!/bin/sh
# Container entrypoint: give each replica its own, stable MQTT client id, then exec the
# command (default: homemonitor run).
#
# Why: every worker keeps a persistent MQTT session under its client id. Two replicas
# with the same id (Settings' default is homemonitor-worker-1) would take the session
# from each other in a loop. And Mosquitto's shared subscriptions hand messages to every
# member session round robin, connected or not: a replica's share waits in its session
# until a client with the SAME id comes back. So the id must differ per replica and stay
# the same when a container is recreated (new image, changed config).
#
# How: unless HOMEMONITOR_MQTT_CLIENT_ID is set, ask Docker's embedded DNS (127.0.0.11)
# for the reverse name of this container's address: the container NAME, e.g.
# homemonitor-homemonitor-2 (project-service-index), which compose keeps across
# recreation. Without it (not on a compose network), fall back to the hostname: the
# container id, which survives restarts but not recreation. (DOCKER_DNS_SERVER=host[:port]
# points the lookup elsewhere; tests/test_deploy.py uses it.)
set -eu

if [ -z "${HOMEMONITOR_MQTT_CLIENT_ID:-}" ]; then
    HOMEMONITOR_MQTT_CLIENT_ID=$(python - <<'PY'
import os
import socket
import struct


def ptr_name(ip: str, server: tuple[str, int], timeout: float = 1.0) -> str | None:
    """The first PTR answer for ``ip`` from ``server``, without /etc/hosts."""
    labels = [*reversed(ip.split(".")), "in-addr", "arpa"]
    qname = b"".join(bytes([len(p)]) + p.encode() for p in labels) + b"\0"
    query_id = os.getpid() & 0xFFFF
    query = struct.pack(">6H", query_id, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">2H", 12, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query, server)
        data = sock.recv(4096)
    rid, flags, _qd, answers, _ns, _ar = struct.unpack(">6H", data[:12])
    if rid != query_id or flags & 0x000F or answers == 0:
        return None

    def name_at(pos: int) -> tuple[str, int]:
        parts, end, hops = [], None, 0
        while data[pos]:
            if data[pos] & 0xC0 == 0xC0:
                if end is None:
                    end = pos + 2
                pos = ((data[pos] & 0x3F) << 8) | data[pos + 1]
                hops += 1
                if hops > 16:
                    raise ValueError("compression loop")
                continue
            parts.append(data[pos + 1 : pos + 1 + data[pos]].decode())
            pos += 1 + data[pos]
        return ".".join(parts), (pos + 1 if end is None else end)

    pos = 12 + len(qname) + 4
    for _ in range(answers):
        _, pos = name_at(pos)
        rtype, _cls, _ttl, length = struct.unpack(">HHIH", data[pos : pos + 10])
        pos += 10
        if rtype == 12:
            return name_at(pos)[0]
        pos += length
    return None


host = socket.gethostname()
name = None
try:
    ip = socket.gethostbyname(host)
    server, _, port = os.environ.get("DOCKER_DNS_SERVER", "127.0.0.11").partition(":")
    full = ptr_name(ip, (server, int(port or 53)))
    if full:
        name = full.split(".")[0]
except (OSError, ValueError, IndexError, struct.error):
    name = None
print(f"homemonitor-{host}" if not name else name)
PY
)
    export HOMEMONITOR_MQTT_CLIENT_ID
fi

if [ "$#" -eq 0 ]; then
    set -- homemonitor run
fi
exec "$@"
