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
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

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
    package = {"mosquitto": "mosquitto", "nats-server": "nats-server"}.get(name, "postgresql")
    hint = f"apt-get install {package}"
    raise ServiceStartError(name, f"binary not found on PATH; install it ({hint})")


class PrivateBroker:
    """What the private brokers share: a process on 127.0.0.1 to stop, kill and restart."""

    kind = ""
    port: int
    directory: Path
    extra_config: str
    _proc: subprocess.Popen[bytes] | None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self) -> None:
        raise NotImplementedError

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


class PrivateMosquitto(PrivateBroker):
    """A Mosquitto broker of our own: persistence on, limits set so nothing is dropped.

    Mosquitto's defaults lose data for a lagging persistent session (``max_queued_messages
    1000``) and throttle a consumer that acknowledges after commit (``max_inflight_messages
    20``); both are set deliberately here, as in ``deploy/mosquitto/mosquitto.conf``.
    """

    kind = "mosquitto"

    def __init__(self, directory: Path, port: int | None = None, *, extra_config: str = "") -> None:
        self.directory = directory
        self.port = port or free_port()
        self.extra_config = extra_config
        self.binary = _find_binary("mosquitto", "/usr/sbin/mosquitto")
        self._proc: subprocess.Popen[bytes] | None = None

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


class PrivateNats(PrivateBroker):
    """A NATS Server of our own with JetStream and its MQTT 3.1.1 gateway, on free ports.

    The MQTT gateway acknowledges a QoS 1 PUBLISH once the message is in JetStream's file
    store (``deploy/nats/``). ``ack_wait`` is how long NATS waits for a PUBACK before it
    redelivers (30 s by default; short here so that tests need not wait).
    ``sync_interval`` is JetStream's (``always`` in ``deploy/nats/``: fsync before every
    acknowledgement; NATS 2.10+, see :meth:`version`; None: NATS's default, 2 minutes).
    ``extra_config`` is added to the generated file (``mappings``, ``authorization``...).
    Several of them form a cluster with :meth:`cluster`.
    """

    kind = "nats"

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        ack_wait_s: float = 3.0,
        max_ack_pending: int = 5000,
        sync_interval: str | None = None,
        extra_config: str = "",
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.client_port = free_port()
        self.cluster_port = free_port()
        self.ack_wait_s = ack_wait_s
        self.max_ack_pending = max_ack_pending
        self.sync_interval = sync_interval
        self.extra_config = extra_config
        self.routes: list[int] = []
        self.replicas = 1
        self.binary = _find_binary("nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server")
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def cluster(cls, directory: Path, size: int = 3, **options: Any) -> list[PrivateNats]:
        """``size`` servers routed to each other, JetStream replicating everything ``size`` times.

        Start them together (:func:`start_all`): JetStream waits for a quorum.
        """
        nodes = [cls(directory / f"n{i}", **options) for i in range(size)]
        for node in nodes:
            node.routes = [other.cluster_port for other in nodes if other is not node]
            node.replicas = size
        return nodes

    def version(self) -> tuple[int, ...]:
        """The installed ``nats-server``'s version, e.g. (2, 9, 10)."""
        out = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=True, timeout=10
        )
        return tuple(int(p) for p in out.stdout.strip().rsplit("v", 1)[1].split("."))

    @property
    def log_path(self) -> Path:
        return self.directory / "nats.log"

    def _write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "nats.conf"
        cluster = ""
        if self.routes:
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.routes)
            cluster = (
                f"cluster {{\n  name: hm\n  listen: 127.0.0.1:{self.cluster_port}\n"
                f"  routes: [{routes}]\n}}\n"
            )
        conf.write_text(
            f"server_name: hm-{self.port}\n"
            f"listen: 127.0.0.1:{self.client_port}\n"
            f'jetstream {{\n  store_dir: "{self.directory / "js"}"\n'
            + (f"  sync_interval: {self.sync_interval}\n" if self.sync_interval else "")
            + "}\n"
            "mqtt {\n"
            f"  listen: 127.0.0.1:{self.port}\n"
            f'  ack_wait: "{self.ack_wait_s:g}s"\n'
            f"  max_ack_pending: {self.max_ack_pending}\n"
            f"  stream_replicas: {self.replicas}\n"
            "}\n"
            f"{cluster}"
            f"{self.extra_config}"
        )
        return conf

    def start(self, *, wait: bool = True) -> None:
        """Start the server; unless ``wait`` is False, wait until its MQTT port accepts."""
        conf = self._write_config()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            _wait_for_port(self.port, self._proc, "nats-server", self.log_path)


def start_all(servers: Sequence[PrivateNats]) -> None:
    """Start every server of a cluster, then wait until each one's MQTT port accepts."""
    for server in servers:
        server.start(wait=False)
    for server in servers:
        _wait_for_port(server.port, server._proc, "nats-server", server.log_path)


class PrivatePostgres:
    """A PostgreSQL cluster of our own (``initdb`` + ``pg_ctl``), trust auth on 127.0.0.1.

    PostgreSQL refuses to run as root; as root the cluster is created and run as the
    ``postgres`` system user. ``durable=False`` turns fsync off, for tests only.
    ``settings`` are server parameters given on the command line at every start (values
    without spaces), e.g. ``{"synchronous_standby_names": "standby1"}``.

    A cluster can also be a streaming standby of another: :meth:`init_standby` instead of
    :meth:`init`, then :meth:`promote` to make it a primary (a failover).
    """

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        durable: bool = True,
        database: str = "homemonitor",
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.durable = durable
        self.database = database
        self.settings = dict(settings or {})
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

    def _run(self, *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*self._as_user, *argv], capture_output=True, check=False, timeout=120, cwd=cwd
        )

    def _make_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            _let_others_traverse(self.directory.parent)
            shutil.chown(self.directory, "postgres", "postgres")
            self.directory.chmod(0o700)

    def init(self) -> None:
        """Create the cluster and the database (once; a second call does nothing)."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self._make_directory()
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

    def init_standby(self, primary: PrivatePostgres) -> None:
        """Become a streaming standby of ``primary`` (running), and start.

        ``pg_basebackup -R`` copies the primary and writes ``standby.signal`` and
        ``primary_conninfo``; the standby's ``cluster_name`` setting, if any, is the
        ``application_name`` the primary's ``synchronous_standby_names`` can name.
        """
        if (self.data_dir / "PG_VERSION").exists():
            raise ServiceStartError("pg_basebackup", f"{self.data_dir} already holds a cluster")
        self._make_directory()
        done = self._run(  # from inside: a parent tightened meanwhile cannot cut it off
            str(self._bin / "pg_basebackup"),
            *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"),
            *("-D", self.data_dir.name, "-R", "--wal-method=stream", "--checkpoint=fast"),
            cwd=self.directory,
        )
        if done.returncode != 0:
            raise ServiceStartError("pg_basebackup", done.stderr.decode(errors="replace").strip())
        self.start()

    def promote(self) -> None:
        """Make a standby a primary (``pg_ctl promote``) and wait until it takes writes."""
        done = self._run(
            self._pg_ctl, "-D", str(self.data_dir), "-w", "-t", str(int(_START_TIMEOUT)), "promote"
        )
        if done.returncode != 0:
            raise ServiceStartError("pg_ctl promote", done.stderr.decode(errors="replace").strip())

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if self._as_user:  # parents may have been tightened since init (pytest does that)
            _let_others_traverse(self.directory.parent)
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.directory}",
            "-c max_connections=100",
            *(f"-c {name}={value}" for name, value in self.settings.items()),
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

    def crash(self) -> None:
        """SIGKILL the postmaster and every server process at once, as losing the host would.

        :meth:`kill` leaves the backends to notice their postmaster is gone; here none of
        them answers again (a commit waiting for its standby never returns).
        """
        pid = self._postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)  # it forks no new children while we list them
        for target in [*_children(pid), pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)
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
