"""Importing a module does nothing but define things (STYLE.md: no globals made at import).

The doctests import every module of the service and the simulators; this proves that is
safe: nothing connects, starts a thread, installs a handler or writes a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"homemonitor": ROOT / "src" / "homemonitor", "homemonitor_devices": ROOT / "devices"}

#: Runs in a fresh interpreter: the state import could change, before and after importing
#: every module of the packages, and any connection attempted meanwhile.
_CHILD = """
import importlib, json, logging, os, pkgutil, signal, socket, sys, tempfile, threading
import prometheus_client

tried = []
def refuse(sock, address, *_):
    tried.append(repr(address))
    raise OSError("no network while importing")
socket.socket.connect = socket.socket.connect_ex = refuse

def state():
    root = logging.getLogger()
    return {
        "threads": sorted(t.name for t in threading.enumerate()),
        "root logger": [root.level, [type(h).__name__ for h in root.handlers]],
        "loggers with handlers": sorted(
            name for name, lg in logging.Logger.manager.loggerDict.items()
            if isinstance(lg, logging.Logger) and lg.handlers
        ),
        "signals": [repr(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)],
        "metrics": sorted(m.name for m in prometheus_client.REGISTRY.collect()),
        "files here": sorted(os.listdir(".")),
        "temporary files": sorted(os.listdir(tempfile.gettempdir())),
    }

before = state()
imported = []
for name in sys.argv[1:]:
    package = importlib.import_module(name)
    imported.append(name)
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        if not info.name.endswith(".__main__"):
            importlib.import_module(info.name)
            imported.append(info.name)
print(json.dumps({"imported": imported, "changed": [before, state()], "tried": tried}))
"""


def _modules_on_disk() -> list[str]:
    """Every module of the packages, from their files (``__main__`` excepted)."""
    names = []
    for package, folder in PACKAGES.items():
        base = folder if folder.name == package else folder / package
        for path in base.rglob("*.py"):
            parts = path.relative_to(base.parent).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts[-1] != "__main__":
                names.append(".".join(parts))
    return sorted(names)


def test_importing_every_module_has_no_side_effects(tmp_path: Path) -> None:
    """Every module imports with no configuration, network or warning, and changes nothing."""
    (tmp_path / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEMONITOR_")}
    env["TMPDIR"] = str(tmp_path / "tmp")
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", _CHILD, *PACKAGES],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (0, "") == (done.returncode, done.stderr)
    report = json.loads(done.stdout)
    before, after = report["changed"]
    assert (_modules_on_disk(), before, []) == (sorted(report["imported"]), after, report["tried"])
