"""The README's local stack, run as a reader runs it: its code blocks, word for word, in a copy of the repository.

:func:`readme_blocks` extracts the bash blocks of README.md's "Running it without Docker";
:class:`ReadmeStack` runs them in a fresh directory that links to this repository's Makefile,
Procfile, ``stack/`` and venvs, so that ``.env`` and ``var/`` are written there and not in the
checkout. The only change to the first block is its ports line (free ports instead of 8080, 9090
and 6379: the snippet's own variables), and ``HOME`` points into the test's directory, so
``IMAGES="$HOME/images"`` stays as written. The environment is built from scratch (no
``ASSISTANT_*`` of the test run leaks in), plus ``PYTHONPATH`` so the processes import this
checkout.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.integration.ls_harness import find_ls_venv
from tests.integration.processes import REPO_ROOT, free_port

__all__ = ["PORTS_LINE", "ReadmeStack", "readme_blocks", "read_env_file"]

README = REPO_ROOT / "README.md"
SECTION = "## Running it without Docker"
#: The snippet's ports line, the one line the test changes.
PORTS_LINE = "LS_PORT=8080 BACKEND_PORT=9090 REDIS_PORT=6379"
# What the copy links to; everything else the stack writes (.env, var/) stays in the copy.
_LINKED = ("Makefile", "Procfile", "stack", "pyproject.toml")


def readme_blocks() -> list[str]:
    """The bash code blocks of the README's "Running it without Docker", in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of an env file."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def _stopped(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.TransportError:
        return True
    return False


@dataclass
class ReadmeStack:
    """The README's stack in ``root`` (see the module docstring).

    Attributes:
        root: The test's directory: ``repo/`` (the copy) and ``home/`` (``HOME``).
        ports: LS_PORT, BACKEND_PORT, REDIS_PORT as the snippet gets them.
    """

    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.repo = self.root / "repo"
        self.home = self.root / "home"
        self.repo.mkdir(parents=True)
        self.home.mkdir()
        for name in _LINKED:
            (self.repo / name).symlink_to(REPO_ROOT / name)
        (self.repo / ".venv").symlink_to(REPO_ROOT / ".venv")
        ls_venv = find_ls_venv()
        if ls_venv is not None:
            (self.repo / ".venv-ls").symlink_to(ls_venv)
        self.ports = {"LS_PORT": free_port(), "BACKEND_PORT": free_port(), "REDIS_PORT": free_port()}

    # --- the environment and the blocks -----------------------------------------------------------
    def env(self) -> dict[str, str]:
        """A reader's shell: PATH, HOME, a locale; plus PYTHONPATH (this checkout) and the offline hub."""
        return {
            "PATH": f"{REPO_ROOT / '.venv' / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONPATH": str(REPO_ROOT),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "COLUMNS": "200",
        }

    def start_block(self) -> str:
        """The first block with the ports line changed, and nothing else."""
        block = readme_blocks()[0]
        assert block.count(PORTS_LINE) == 1, f"the README's ports line is no longer {PORTS_LINE!r}"
        ports = " ".join(f"{name}={port}" for name, port in self.ports.items())
        return block.replace(PORTS_LINE, ports)

    def start(self) -> None:
        """Run the first block (it ends in ``make stack``, in the foreground) in its own session."""
        log = (self.root / "stack.out").open("ab")
        self.process = subprocess.Popen(
            ["bash", "-c", self.start_block()],
            cwd=self.repo,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def run_block(self, block: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run a later block from the same directory, as a second terminal would."""
        return subprocess.run(
            ["bash", "-c", block], cwd=self.repo, env=self.env(), capture_output=True, text=True, timeout=timeout
        )

    def assistant(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """``.venv/bin/assistant <args>`` from the stack's directory (it reads the ``.env`` there)."""
        return subprocess.run(
            [".venv/bin/assistant", *args],
            cwd=self.repo,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @property
    def dotenv(self) -> dict[str, str]:
        """The ``.env`` the first block wrote."""
        return read_env_file(self.repo / ".env")

    @property
    def ls_url(self) -> str:
        """Label Studio's URL."""
        return f"http://127.0.0.1:{self.ports['LS_PORT']}"

    @property
    def backend_url(self) -> str:
        """The backend's URL, as Label Studio is told it."""
        return f"http://127.0.0.1:{self.ports['BACKEND_PORT']}"

    def output(self) -> str:
        """What the stack printed, and the tail of every log under var/logs."""
        parts = [(self.root / "stack.out").read_text(errors="replace")[-3000:]]
        for log in sorted((self.repo / "var" / "logs").glob("*.log")):
            parts.append(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    # --- stopping ---------------------------------------------------------------------------------
    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C in the stack's terminal: SIGINT to its process group; returns the exit status."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """Whatever is left of the stack, even when the test failed: SIGKILL every process group it started."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                self.interrupt(timeout=20)
        # honcho starts each Procfile line in a session of its own: find them by their working directory.
        for pid in _pids_in(self.repo):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def all_stopped(self) -> bool:
        """Nothing answers on the stack's ports any more."""
        redis_down = subprocess.run(
            ["redis-cli", "-p", str(self.ports["REDIS_PORT"]), "ping"], capture_output=True, text=True
        )
        return (
            _stopped(f"{self.ls_url}/health")
            and _stopped(f"{self.backend_url}/health")
            and "PONG" not in redis_down.stdout
        )


def _pids_in(directory: Path) -> list[int]:
    """Process ids whose working directory is ``directory`` (Linux /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if Path(os.readlink(proc / "cwd")) == directory:
                found.append(int(proc.name))
    return found


def wait_until(what: str, check: object, timeout: float, stack: ReadmeStack, interval: float = 1.0) -> None:
    """Poll ``check()`` until truthy; fail with the stack's output on timeout or when the stack exited."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if stack.process is not None and stack.process.poll() is not None:
            raise AssertionError(
                f"the stack exited ({stack.process.returncode}) while waiting for {what}\n{stack.output()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{stack.output()}")
        time.sleep(interval)
