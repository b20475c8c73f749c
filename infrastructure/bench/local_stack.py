"""The benchmark's handles on the local stack: a client of DynamoDB Local, the local API in its
own process, and the error raised when the stack does not do what a measurement needs."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from infrastructure import names
from infrastructure.local.dynamodb_local import REPO_ROOT


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to."""


def dynamodb_client(endpoint: str) -> Any:
    """A client of DynamoDB Local with a connection pool wide enough for every load worker in flight."""
    return boto3.session.Session().client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=names.LOCAL_REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=64),
    )


class ServerProcess:
    """`infrastructure.bench.serve` as a child process."""

    def __init__(self, endpoint: str, template: Path, table: str) -> None:
        self.command = [
            sys.executable,
            "-m",
            "infrastructure.bench.serve",
            "--endpoint",
            endpoint,
            "--template",
            str(template),
            "--table",
            table,
        ]
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> ServerProcess:
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO_ROOT,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("READY "):
            self.__exit__()
            raise BenchError(f"the local API did not start (it said {line!r})")
        self.url = line.split(" ", 1)[1]
        # What the server prints from now on is read and dropped: a pipe nobody reads
        # fills up, and then the server's next print blocks it for good.
        stdout = self.process.stdout
        threading.Thread(target=lambda: stdout.read(), name="bench-server-stdout", daemon=True).start()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __exit__(self, *exc: object) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.stdin:
            process.stdin.close()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
