"""The outbox phase: one worker without notification channels, then with them (issue 11).

The alert_events trigger writes outbox rows in the batch's own transaction, and the
notifier delivers them in the worker's process. This phase runs the worker's step
search twice on the same registry and load: first with no care team having a channel,
then with every care team having a webhook (to a receiver in this process that answers
200 at once), the MQTT alert topic and patient feedback (both through the bench's
broker). Email is left out: it would need an SMTP server, and its cost is the
notifier's, not the batch's. Each step starts with no alerts (the step resets them), so
both runs open the same alerts. The target is at most 10 % less throughput with channels.

Two searches one after the other on a shared machine differ by more than 10 % on their
own (another process's load moves the limit), so :func:`interleave` also runs one worker
at one rate with the channels switched off and on step by step (they are read per
statement and per delivery, so no restart is needed) and compares the CPU per reading of
the worker process, which other processes' load does not move: a worker that is limited
by its CPU, as the step search shows it is, sustains ``without / with`` of its rate.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from homemonitor.embedded import free_port
from homemonitor.notify import config
from homemonitor_bench.consumers import Db, ServiceWorkers
from homemonitor_bench.search import Bench, Search

#: Issue 11: with channels the worker sustains at least this share of its rate without.
OUTBOX_SHARE = 0.90


class _Receiver:
    """A webhook receiver that counts what it is sent and answers 204."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> _Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


async def _channels(db: Db, notifications: config.NotificationsIn | None) -> int:
    """Give every care team ``notifications`` (None: no channels); how many channels."""
    teams = [r["id"] for r in await db.fetch("SELECT id FROM care_teams")]
    return await config.store(await db.conn(), [(t, notifications) for t in teams])


def _every(port: int, workdir: Path) -> config.NotificationsIn:
    secret = workdir / "bench-webhook-secret"
    secret.write_text("bench-secret\n")
    return config.NotificationsIn.model_validate(
        {
            "webhook": {"url": f"http://127.0.0.1:{port}/hook", "secret_file": secret},
            "mqtt": {"alerts": True},
            "feedback": {"en": "Your reading was received. Your care team has been told."},
        }
    )


async def compare(  # noqa: PLR0917 - the run's own closures, passed as they are
    bench: Bench,
    searched: Callable[[str, ServiceWorkers, float], Awaitable[Search]],
    retire: Callable[[ServiceWorkers], Awaitable[None]],
    workers: Callable[..., ServiceWorkers],
    start: float,
    step_seconds: float,
    rounds: int = 3,
) -> dict[str, Any]:
    """Both searches, then the interleaved CPU comparison, with what was delivered."""
    db = bench.db
    out: dict[str, Any] = {}
    with _Receiver() as receiver:
        every = _every(receiver.port, bench.workdir)
        try:
            for key, notifications in (("without", None), ("with", every)):
                out[f"{key}_channels"] = await _channels(db, notifications)
                w = workers(1, f"outbox-{key}", label=f"one worker, {key} channels")
                found = await searched(f"worker_{key}_channels", w, start)
                out[f"{key}_rate"] = found.best.rate if found.best else 0.0
                if key == "with":
                    rate = float(round(0.8 * min(out["without_rate"], out["with_rate"]) / 50) * 50)
                    out["interleaved"] = await interleave(
                        bench, w, max(rate, 500.0), step_seconds, rounds, every
                    )
                await retire(w)
            out["webhooks_received"] = receiver.received
        finally:
            await _channels(db, None)
    without, with_ = out["without_rate"], out["with_rate"]
    out["share"] = with_ / without if without else None
    share = f"{out['share']:.0%}" if out["share"] is not None else "n/a"
    i = out["interleaved"]
    print(
        f"  outbox: one worker sustains {without:.0f}/s without channels, {with_:.0f}/s with "
        f"{out['with_channels']} channels ({share}, one search after the other); "
        f"interleaved at {i['rate']:.0f}/s the worker spends {i['without_us']:.0f} -> "
        f"{i['with_us']:.0f} us CPU per reading: {i['share']:.0%} of its throughput "
        f"(target >= {OUTBOX_SHARE:.0%}); {receiver.received} webhooks delivered",
        flush=True,
    )
    return out


async def interleave(  # noqa: PLR0917 - one step's parameters
    bench: Bench,
    worker: ServiceWorkers,
    rate: float,
    seconds: float,
    rounds: int,
    every: config.NotificationsIn,
) -> dict[str, Any]:
    """Steps at ``rate`` with channels off and on in turn; the worker's CPU per reading."""
    used: dict[str, list[float]] = {"without": [], "with": []}
    postgres: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(rounds):
        for key, notifications in (("without", None), ("with", every)):
            await _channels(bench.db, notifications)
            step, _ = await bench.step(worker, rate, seconds, quiet=True)
            used[key].append(step.cpu_us["consumer"])
            postgres[key].append(step.cpu_us["postgres"])
    without_us = sum(used["without"]) / rounds
    with_us = sum(used["with"]) / rounds
    return {
        "rate": rate,
        "rounds": rounds,
        "consumer_us": used,
        "postgres_us": postgres,
        "without_us": without_us,
        "with_us": with_us,
        "share": without_us / with_us if with_us else None,
    }
