"""The documentation's references resolve in a fresh clone of the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
    ROOT / "deploy" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
#: Paths a reader makes by following the documentation (deploy/README.md, "First start");
#: gitignored, so never in a clone.
MADE_BY_THE_READER = (
    "deploy/mosquitto/passwd",
    "deploy/mosquitto/certs/",
    "deploy/secrets/",
    "deploy/nats/users.conf",
    "deploy/nats/certs/",
    "bench-results/",  # make bench writes it
)

_FENCED = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE = re.compile(r"`([^`\s]+)`")
_PATH = re.compile(r"(?:\.{1,2}/)?[\w.-]+(?:/[\w.-]*)*")
_FILE_NAME = re.compile(r".*\.(?:md|py|ya?ml|json|toml|sh|sql|txt|conf|cfg|example)")


def _in_clone() -> set[str]:
    """Every file a fresh clone has (tracked, or new and not ignored), and their folders."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: which files are committed is unknown")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    files = {f for f in listed if (ROOT / f).exists()}  # not deleted in the work tree
    return files | {str(p) for f in files for p in Path(f).parents if str(p) != "."}


def _references(page: Path) -> list[str]:
    """Relative link targets, and inline-code paths that look like paths in this repository."""
    text = _FENCED.sub("", page.read_text(encoding="utf-8"))
    top = {p.name for p in ROOT.iterdir()} | {p.name for p in page.parent.iterdir()}
    found = [t for t in _LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]
    for code in _CODE.findall(text):
        if not _PATH.fullmatch(code) or code.startswith("/"):
            continue
        first = code.split("/")[0]
        if code.startswith("../") or ("/" in code and (first in top or _FILE_NAME.fullmatch(code))):
            found.append(code)
    return [t.split("#")[0] for t in found if t.split("#")[0]]


def _resolves(target: str, page: Path, clone: set[str]) -> bool:
    for base in (page.parent, ROOT):
        path = (base / target).resolve()
        if not path.is_relative_to(ROOT):
            continue
        relative = str(path.relative_to(ROOT))
        made = any(f"{relative}/".startswith(m.rstrip("/") + "/") for m in MADE_BY_THE_READER)
        if relative in clone or made:
            return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_path_the_page_names_is_in_the_repository(page: Path) -> None:
    """Each relative link and each repository path in inline code exists in a fresh clone."""
    clone = _in_clone()
    assert [] == [t for t in _references(page) if not _resolves(t, page, clone)]
