"""Private Mosquitto and PostgreSQL instances started from the installed binaries.

One mechanism for everything that needs its own broker or database: ``make demo``,
``make bench`` and the test fixtures. Each instance lives in its own directory on
a free port, and can be stopped, killed and started again, which is how the tests cut
the pipeline's legs from under it.

    >>> with PrivatePostgres(Path("/tmp/pg")) as pg:  # doctest: +SKIP
    ...     print(pg.dsn)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from homemonitor.errors import ServiceStartError

_START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, what: str, log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceStartError(what, f"exited with {proc.returncode}; see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise ServiceStartError(what, f"port {port} not open after {_START_TIMEOUT:g} s; see {log}")


def _find_binary(name: str, *search: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for pattern in search:
        candidates = sorted(Path("/").glob(pattern.lstrip("/")), reverse=True)
        if candidates:
            return str(candidates[0])
    hint = "apt-get install mosquitto" if name == "mosquitto" else "apt-get install postgresql"
    raise ServiceStartError(name, f"binary not found on PATH; install it ({hint})")


class PrivateMosquitto:
    """A Mosquitto broker of our own: persistence on, limits set so nothing is dropped.

    Mosquitto's defaults lose data for a lagging persistent session (``max_queued_messages
    1000``) and throttle a consumer that acknowledges after commit (``max_inflight_messages
    20``); both are set deliberately here, as in ``deploy/mosquitto/mosquitto.conf``.
    """

    def __init__(self, directory: Path, port: int | None = None, *, extra_config: str = "") -> None:
        self.directory = directory
        self.port = port or free_port()
        self.extra_config = extra_config
        self.binary = _find_binary("mosquitto", "/usr/sbin/mosquitto")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    def _write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "mosquitto.conf"
        run_as = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(
            f"{run_as}"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.directory}/\n"
            "autosave_interval 1\n"
            "max_inflight_messages 5000\n"
            "max_queued_messages 1000000\n"
            "max_queued_bytes 0\n"
            "persistent_client_expiration 14d\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            f"{self.extra_config}"
        )
        return conf

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        conf = self._write_config()
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, self._proc, "mosquitto", self.log_path)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM): the broker saves its persistent state."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=15)
        self._proc = None

    def kill(self) -> None:
        """Kill without a chance to save (SIGKILL), as a crash would."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=15)
        self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class PrivatePostgres:
    """A PostgreSQL cluster of our own (``initdb`` + ``pg_ctl``), trust auth on 127.0.0.1.

    PostgreSQL refuses to run as root; as root the cluster is created and run as the
    ``postgres`` system user. ``durable=False`` turns fsync off, for tests only.
    """

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        durable: bool = True,
        database: str = "homemonitor",
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.durable = durable
        self.database = database
        pattern = "/usr/lib/postgresql/*/bin/{}"
        self._initdb = _find_binary("initdb", pattern.format("initdb"))
        self._pg_ctl = _find_binary("pg_ctl", pattern.format("pg_ctl"))
        self._bin = Path(self._pg_ctl).resolve().parent
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = _find_binary("runuser", "/usr/sbin/runuser")
            self._as_user = [runuser, "-u", "postgres", "--"]

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def bin_dir(self) -> Path:
        """Where this cluster's PostgreSQL binaries are (``pg_basebackup``, ``psql``, ...)."""
        return self._bin

    def run_as_owner(self, *argv: str) -> subprocess.CompletedProcess[bytes]:
        """Run a command as the user that owns the cluster's files (``postgres`` as root)."""
        return self._run(*argv)

    def _run(self, *argv: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*self._as_user, *argv], capture_output=True, check=False, timeout=120
        )

    def init(self) -> None:
        """Create the cluster and the database (once; a second call does nothing)."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            _let_others_traverse(self.directory.parent)
            shutil.chown(self.directory, "postgres", "postgres")
            self.directory.chmod(0o700)
        done = self._run(
            self._initdb,
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        if done.returncode != 0:
            raise ServiceStartError("initdb", done.stderr.decode(errors="replace").strip())
        self.start()
        created = self._run(
            str(self._bin / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            self.database,
        )
        if created.returncode != 0:
            raise ServiceStartError("createdb", created.stderr.decode(errors="replace").strip())

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if self._as_user:  # parents may have been tightened since init (pytest does that)
            _let_others_traverse(self.directory.parent)
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.directory}",
            "-c max_connections=100",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        done = self._run(
            self._pg_ctl,
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            str(int(_START_TIMEOUT)),
            "start",
        )
        if done.returncode != 0:
            raise ServiceStartError(
                "postgres", f"{done.stderr.decode(errors='replace').strip()}; see {self.log_path}"
            )
        _wait_for_port(self.port, None, "postgres", self.log_path)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are cut)."""
        if self.running:
            self._run(self._pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def kill(self) -> None:
        """Kill the postmaster (SIGKILL), as a crash would; the next start recovers."""
        pid = self._postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.02)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP to the postmaster and its children), as a hung host would.

        Connections stay open and queries get no answer, not an error; :meth:`resume`
        lets it carry on where it stopped.
        """
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a server stopped by :meth:`pause` carry on (SIGCONT)."""
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, sig: signal.Signals) -> None:
        pid = self._postmaster_pid()
        if pid is None:
            return
        # The postmaster first: stopped, it forks no new children while we signal them.
        for target in [pid, *_children(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, sig)

    def _postmaster_pid(self) -> int | None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            return int(pidfile.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None

    @property
    def running(self) -> bool:
        pid = self._postmaster_pid()
        return pid is not None and _alive(pid)

    def __enter__(self) -> Self:
        self.init()
        if not self.running:
            self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _let_others_traverse(directory: Path) -> None:
    """Add the search (x) bit for others on our private parent directories.

    A temporary directory is 0700; the ``postgres`` user could not reach its own data
    directory below it. Only the x bit is added: listing stays private.
    """
    for parent in [directory, *directory.resolve().parents]:
        info = parent.stat()
        if info.st_uid == os.geteuid() and not info.st_mode & 0o001:
            parent.chmod(info.st_mode | 0o001)


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")"
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
