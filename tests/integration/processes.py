"""Real assistant processes for the integration tests and benchmarks: ports, subprocesses, environments, waits.

- :func:`free_port`: a loopback port nobody listens on now.
- :class:`Process`: a subprocess in its own process group with its log in a file; ``stop`` is a
  warm shutdown (SIGTERM, then SIGKILL), ``kill`` a SIGKILL of the whole group.
- :func:`wait_for`: poll a check, failing with the processes' logs on a timeout or an exit.
- :func:`assistant`, :func:`assistant_env`: the command line and the environment of a real
  ``assistant worker`` / ``assistant serve`` / ``assistant <command>``.
- :func:`healthy`: whether a backend answers ``/health``.
- :func:`sees_a_worker`: whether a backend has seen a worker consume its predict queue.

Nothing here imports torch, Label Studio or Redis.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import httpx

__all__ = ["REPO_ROOT", "Process", "assistant", "assistant_env", "free_port", "healthy", "sees_a_worker", "wait_for"]

REPO_ROOT = Path(__file__).resolve().parents[2]

T = TypeVar("T")
_STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Process:
    """A subprocess in its own process group, logging to a file; stopped by group.

    Args:
        name: For messages.
        cmd: The command line.
        env: Its whole environment.
        log: Where stdout and stderr go (appended).
        nice: Added niceness (the soak yields the CPU to interactive work).
    """

    def __init__(self, name: str, cmd: list[str], env: Mapping[str, str], log: Path, *, nice: int = 0) -> None:
        self.name, self.log, self.cmd = name, log, cmd
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=(lambda: os.nice(nice)) if nice else None,
            )

    def text(self) -> str:
        """The log so far."""
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise with the log tail when the process exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no warm shutdown, no acknowledgement."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=_STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL it after 20 s; then sweep whatever the group left behind."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def wait_for(what: str, check: Callable[[], T | None], timeout: float, *procs: Process, interval: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy; fail with the processes' logs on timeout.

    Raises:
        AssertionError: ``timeout`` passed.
        RuntimeError: One of ``procs`` exited meanwhile.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for proc in procs:
            proc.check_alive()
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name} ---\n{p.text()[-3000:]}" for p in procs)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
        time.sleep(interval)


def healthy(url: str) -> bool:
    """Whether the backend at ``url`` answers ``GET /health`` with 200 within a second."""
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    return False


def sees_a_worker(url: str) -> bool:
    """Whether ``/health`` at ``url`` says a worker consumes the predict queue.

    A backend that asked before its worker was ready remembers "no worker" for a few seconds and
    answers ``/predict`` at once without predictions meanwhile (``backends.presence``); a test that
    measures inline predictions waits for this first.
    """
    with contextlib.suppress(httpx.HTTPError, ValueError):
        body = httpx.get(f"{url}/health", timeout=1).json()
        return bool(body.get("workers", {}).get("consumed"))
    return False


def assistant(*args: str) -> list[str]:
    """The command line of ``assistant <args>`` with this interpreter (the venv's)."""
    return [sys.executable, "-c", "from cli.main import main; main()", *args]


def assistant_env(
    *,
    home: Path,
    base_model: Path,
    broker_url: str,
    prefix: str,
    ls_url: str,
    ls_key: str,
    **extra: str,
) -> dict[str, str]:
    """The environment of the worker, backend and CLI processes of a test stack.

    Every ``ASSISTANT_*`` and ``LABEL_STUDIO_*`` variable of the calling shell is dropped, so
    nothing of the developer's own configuration leaks in; ``extra`` adds more (names without
    the ``ASSISTANT_`` prefix, e.g. ``PREDICT_CHUNK_SIZE="4"``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSISTANT_", "LABEL_STUDIO_"))}
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "160",
            # Never a developer's .env in the repository (the processes run there).
            "ASSISTANT_ENV_FILE": os.devnull,
            "ASSISTANT_HOME": str(home),
            "ASSISTANT_BASE_MODEL": str(base_model),
            "ASSISTANT_BROKER_URL": broker_url,
            "ASSISTANT_REDIS_KEY_PREFIX": prefix,
            "ASSISTANT_DEVICE": "cpu",
            "ASSISTANT_TORCH_THREADS": "1",
            "ASSISTANT_LABEL_STUDIO_URL": ls_url,
            "ASSISTANT_LABEL_STUDIO_API_KEY": ls_key,
        }
    )
    env.update({f"ASSISTANT_{key.upper()}": value for key, value in extra.items()})
    return env
