"""The actions the access log records are those the API metrics count; counting never fails."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry

from homemonitor.access_actions import ACTIONS, WRITES, AccessAction, kind
from homemonitor.api import access
from homemonitor.metrics import Metrics

SRC = Path(__file__).resolve().parents[2] / "src" / "homemonitor"

#: Every function that writes or counts an access-log action, by the name it is called by.
_TAKES_ACTION: dict[str, Callable[..., Any]] = {
    "log_access": access.log_access,
    "log_denied": access.log_denied,
    "team_alert": access.team_alert,
    "team_patient": access.team_patient,
    "visible_patient": access.visible_patient,
    "NotVisibleError": access.NotVisibleError,
    "api_access": Metrics.api_access,
}


def _position(function: Callable[..., Any]) -> int:
    """Where ``action`` is among the positional arguments of a call of ``function``."""
    names = list(inspect.signature(function).parameters)
    return names.index("action") - (names[0] == "self")


def _literal_actions() -> list[tuple[str, str]]:
    """Each string literal the code passes as an action: (where, action)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            callee = node.func
            name = callee.attr if isinstance(callee, ast.Attribute) else getattr(callee, "id", "")
            # argparse's action= is another kind of action
            args = [k.value for k in node.keywords if k.arg == "action" and name != "add_argument"]
            if name in _TAKES_ACTION and len(node.args) > _position(_TAKES_ACTION[name]):
                args.append(node.args[_position(_TAKES_ACTION[name])])
            found += [
                (f"{path.name}:{node.lineno}", a.value)
                for a in args
                if isinstance(a, ast.Constant) and isinstance(a.value, str)
            ]
    return found


def test_every_action_the_code_writes_is_one_the_metrics_count() -> None:
    """Each literal action passed to the access log or the counter is in ACTIONS."""
    written = _literal_actions()
    assert len(written) >= 10  # the scan finds the calls it is about
    assert [] == [(where, a) for where, a in written if a not in ACTIONS]


def test_every_action_has_its_series_from_the_start_as_a_read_or_a_write() -> None:
    """A reads series per read action, a writes series per write action, each at zero."""
    metrics = Metrics(CollectorRegistry())
    series = {
        (sample.name, sample.labels["action"])
        for family in metrics.registry.collect()
        if family.name in ("homemonitor_api_patient_reads", "homemonitor_api_patient_writes")
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    expected = {(f"homemonitor_api_patient_{kind(a)}s_total", a) for a in ACTIONS}
    assert expected == series
    assert WRITES < set(ACTIONS)


def test_counting_an_action_not_listed_does_not_fail_the_request() -> None:
    """An action outside the list (only possible past the type checker) is still counted."""
    metrics = Metrics(CollectorRegistry())
    metrics.api_access(cast(AccessAction, "view_something_new"))
    metrics.api_access("acknowledge_alert")
    sample = metrics.registry.get_sample_value
    assert (1.0, 1.0) == (
        sample("homemonitor_api_patient_reads_total", {"action": "view_something_new"}),
        sample("homemonitor_api_patient_writes_total", {"action": "acknowledge_alert"}),
    )
