"""A real Label Studio server for end-to-end tests, and a small client around it.

The server runs from its own venv (``ASSISTANT_LS_VENV``, default ``<repo>/.venv-ls``; it pins
``redis<5.3``, which clashes with the project's Celery) on ``127.0.0.1``, on a free port, with a
fresh data dir per test session. It starts headless and non-interactively:

- legacy tokens on and a deterministic user token, so ``Authorization: Token <key>`` works at once;
- ``ML_BLOCK_LOCAL_IP=false`` (else registering a backend on 127.0.0.1 answers 403) and
  ``SSRF_PROTECTION_ENABLED=false``;
- local-files serving on, rooted in a per-session document root;
- Sentry, analytics and the version check off (closed network), a fixed ``SECRET_KEY``;
- ``--port``/``--host`` passed explicitly, and an environment built from scratch: LS reads
  unprefixed ``PORT``, ``HOST``, ``USERNAME``, ``PASSWORD``, ``DEBUG``, ``DATABASE_NAME``, ... as
  fallbacks, so whatever the CI shell exports must not leak in.

A fresh data dir migrates for ~30 s. The harness migrates once into a template cached under
``<repo>/.cache/ls-template-<ls version>`` (gitignored) and copies it per session (~5 s to
``/health``).

Typical use (the fixtures live in ``tests/integration/conftest.py``)::

    def test_something(ls_client: LSClient, shared_datasets: Path) -> None:
        photos = sorted((shared_datasets / "coco128/images/val2017").glob("*.jpg"))[:3]
        project = ls_client.create_project(MULTILABEL_CONFIG)
        task_ids = ls_client.upload_images(project, photos)
        with RecordingBackend() as backend:  # or the real backend's URL
            ls_client.connect_ml_backend(project, backend.url)
            ls_client.retrieve_predictions(project, task_ids)
        assert ls_client.predictions(project=project)

Processes: every server is the leader of its own process group, stopped with SIGTERM then
SIGKILL at teardown (also when tests fail), and dies with pytest if pytest itself is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from label_studio_sdk.actions.types import PrepareParamsRequestRequestSelectedItemsIncluded
from label_studio_sdk.client import LabelStudio
from label_studio_sdk.types import ImportApiRequest, SerializationOptionRequest, SerializationOptionsRequest

__all__ = [
    "LSClient",
    "LSServer",
    "LSStartError",
    "MULTILABEL_CONFIG",
    "RecordingBackend",
    "ServerConfig",
    "ensure_template",
    "find_ls_venv",
    "ls_version",
    "running_server",
    "start_server",
]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]

# A deterministic user and legacy token: tests and the ML backend under test share them.
USERNAME = "assistant@example.com"
PASSWORD = "assistant-e2e-Passw0rd"
USER_TOKEN = "a55157a47e2e0000111122223333444455556666"
# 32+ bytes: shorter HMAC keys make PyJWT warn on every PAT refresh.
SECRET_KEY = "assistant-e2e-fixed-secret-key-not-for-production"

# Measured on 2 shared cores: migrating takes ~30 s, a start from a migrated copy ~5 s. The limits
# leave room for a loaded machine without hanging a broken run for long.
MIGRATE_TIMEOUT_S = 300.0
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 60

# A multi-label image-tagging config for smoke tests (three COCO classes plus a scene tag).
MULTILABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="tags" toName="image" choice="multiple" showInline="true">
    <Choice value="person"/>
    <Choice value="dog"/>
    <Choice value="giraffe"/>
    <Choice value="outdoor"/>
  </Choices>
</View>"""


class LSStartError(RuntimeError):
    """Label Studio could not be prepared or started; the message carries the log tail."""


# --- locating the Label Studio venv -------------------------------------------------------------
def find_ls_venv(environ: Mapping[str, str] | None = None) -> Path | None:
    """The Label Studio venv, or None when it is absent.

    Args:
        environ: Where to read ``ASSISTANT_LS_VENV`` (``os.environ`` by default).
    """
    env = os.environ if environ is None else environ
    venv = Path(env.get("ASSISTANT_LS_VENV") or REPO_ROOT / ".venv-ls")
    return venv if (venv / "bin" / "label-studio").is_file() else None


def ls_version(venv: Path) -> str:
    """The installed label-studio version, read from its dist-info (no 30 s CLI call)."""
    found = sorted(venv.glob("lib/python*/site-packages/label_studio-*.dist-info"))
    if not found:
        raise LSStartError(f"no label_studio-*.dist-info under {venv}; reinstall it with `make ls-venv`")
    return found[-1].name.removeprefix("label_studio-").removesuffix(".dist-info")


# --- environment and processes ------------------------------------------------------------------
@dataclass(frozen=True)
class ServerConfig:
    """Where one server keeps its state.

    Attributes:
        venv: The Label Studio venv.
        data_dir: ``LABEL_STUDIO_BASE_DATA_DIR``: sqlite DB, uploads, exports.
        document_root: ``LOCAL_FILES_DOCUMENT_ROOT``: local-files tasks must point under it.
        home: ``HOME`` of the server process (LS writes ``~/.config/label-studio`` there).
        log_path: The server's stdout and stderr.
        extra_env: More variables for the server (e.g. ``ML_TIMEOUT_PREDICT``).
    """

    venv: Path
    data_dir: Path
    document_root: Path
    home: Path
    log_path: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)


def _server_env(cfg: ServerConfig) -> dict[str, str]:
    # Built from scratch rather than copied: LS falls back to unprefixed names (PORT, HOST,
    # USERNAME, PASSWORD, DEBUG, DATABASE_NAME, REDIS_LOCATION, ...), so nothing of ours may leak.
    env = {key: os.environ[key] for key in ("LANG", "LC_ALL", "TZ", "TMPDIR") if key in os.environ}
    env.update(
        PATH=f"{cfg.venv / 'bin'}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin",
        HOME=str(cfg.home),
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
        LABEL_STUDIO_BASE_DATA_DIR=str(cfg.data_dir),
        LOCAL_FILES_SERVING_ENABLED="true",
        LOCAL_FILES_DOCUMENT_ROOT=str(cfg.document_root),
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        ML_BLOCK_LOCAL_IP="false",
        SSRF_PROTECTION_ENABLED="false",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
        LATEST_VERSION_CHECK="false",
        COLLECT_ANALYTICS="false",
        SECRET_KEY=SECRET_KEY,
    )
    env.update(cfg.extra_env)
    return env


def _die_with_parent() -> None:
    # Runs in the child before exec: if pytest is killed outright (SIGKILL, OOM), the kernel
    # sends SIGTERM to the server instead of leaving it orphaned. Linux only; harmless elsewhere.
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _spawn(args: Sequence[str], cfg: ServerConfig) -> subprocess.Popen[bytes]:
    for path in (cfg.data_dir, cfg.document_root, cfg.home):
        path.mkdir(parents=True, exist_ok=True)
    with cfg.log_path.open("ab") as log:
        # A new session makes the server the leader of its own process group, so teardown can
        # signal the whole group (runserver plus anything it forks) and nothing else.
        return subprocess.Popen(
            [str(cfg.venv / "bin" / "label-studio"), *args],
            env=_server_env(cfg),
            cwd=cfg.home,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # preexec_fn is unsafe only with threads forking concurrently; fixtures start servers serially.
            preexec_fn=_die_with_parent,
        )


def _stop(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group, then SIGKILL it if it outlives ``timeout``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    # The group may outlive its leader (a forked worker); sweep it too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- the migrated template ----------------------------------------------------------------------
def ensure_template(venv: Path, cache_root: Path | None = None) -> Path:
    """Migrate an empty data dir once and cache it; later sessions copy it.

    Concurrent test sessions (several helpers, ``pytest -n``) serialise on a lock file, and the
    template appears under its final name only once it is complete (built aside, then renamed).

    Args:
        venv: The Label Studio venv.
        cache_root: Where templates live (``<repo>/.cache`` by default).

    Returns:
        The template data dir, ``<cache_root>/ls-template-<version>``.

    Raises:
        LSStartError: The migration failed or ran past :data:`MIGRATE_TIMEOUT_S`.
    """
    cache = cache_root or REPO_ROOT / ".cache"
    template = cache / f"ls-template-{ls_version(venv)}"
    if (template / ".complete").is_file():
        return template
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"{template.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (template / ".complete").is_file():  # another session built it while we waited
            return template
        building = cache / f"{template.name}.building-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        cfg = ServerConfig(
            venv=venv,
            data_dir=building / "data",
            document_root=building / "files",
            home=building / "home",
            log_path=building / "migrate.log",
        )
        started = time.monotonic()
        # `label-studio version` migrates the DB, prints the version and exits; `--version` would
        # start a server on 0.0.0.0:8080 instead (environment.md §5).
        proc = _spawn(["version"], cfg)
        try:
            rc = proc.wait(timeout=MIGRATE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            _stop(proc)
        if rc != 0:
            raise LSStartError(
                f"migrating a Label Studio template failed (exit {rc}) after {time.monotonic() - started:.0f} s.\n"
                f"--- {cfg.log_path} ---\n{_log_tail(cfg.log_path)}"
            )
        logger.info("migrated a Label Studio template in %.1f s", time.monotonic() - started)
        (cfg.data_dir / ".complete").touch()
        shutil.rmtree(template, ignore_errors=True)
        cfg.data_dir.rename(template)
        shutil.rmtree(building, ignore_errors=True)
    return template


# --- the server ---------------------------------------------------------------------------------
@dataclass
class LSServer:
    """A running Label Studio server owned by this test session.

    Attributes:
        url: Base URL, ``http://127.0.0.1:<port>``.
        api_key: The admin's legacy token (``Authorization: Token <key>``).
        username: The admin's e-mail.
        password: The admin's password.
        version: The label-studio version.
        config: Where the server keeps its state (data dir, document root, log).
        process: The server process (leader of its own process group).
        start_seconds: Time from spawn to a 200 on ``/health``.
    """

    url: str
    api_key: str
    username: str
    password: str
    version: str
    config: ServerConfig
    process: subprocess.Popen[bytes]
    start_seconds: float

    @property
    def document_root(self) -> Path:
        """``LOCAL_FILES_DOCUMENT_ROOT``: copy local-files images under it."""
        return self.config.document_root

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server log (for failure messages)."""
        return _log_tail(self.config.log_path, lines)

    def stop(self) -> None:
        """Stop the server and its process group (idempotent)."""
        _stop(self.process)

    @property
    def port(self) -> int:
        """The loopback port the server listens on."""
        return int(self.url.rsplit(":", 1)[1])

    def restart(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the server again on the same port and data dir, after :meth:`stop` (an outage).

        Stops it first when it still runs. Clients keep working unchanged: the URL, the data and
        the token stay the same.

        Raises:
            LSStartError: The server exited, did not become healthy, or could not get its port back.
        """
        _stop(self.process)
        started = time.monotonic()
        self.process = _launch(self.config, self.port, timeout)
        self.start_seconds = time.monotonic() - started


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LSStartError(
                    f"Label Studio exited with {proc.returncode} before answering /health.\n"
                    f"--- {log_path} ---\n{_log_tail(log_path)}"
                )
            with contextlib.suppress(httpx.TransportError):
                if http.get(f"{url}/health").status_code == 200:
                    return
            time.sleep(0.25)
    raise LSStartError(
        f"Label Studio did not answer {url}/health within {timeout:.0f} s.\n--- {log_path} ---\n{_log_tail(log_path)}"
    )


def _launch(cfg: ServerConfig, port: int, timeout: float) -> subprocess.Popen[bytes]:
    """Spawn ``label-studio start`` on ``port`` and wait for ``/health`` (stopped again on failure)."""
    url = f"http://127.0.0.1:{port}"
    args = [
        "start",
        "--no-browser",
        "--internal-host", "127.0.0.1",
        "--port", str(port),
        "--host", url,
        "--username", USERNAME,
        "--password", PASSWORD,
        "--user-token", USER_TOKEN,
        "--enable-legacy-api-token",
    ]  # fmt: skip
    logged = cfg.log_path.stat().st_size if cfg.log_path.exists() else 0
    proc = _spawn(args, cfg)
    try:
        _wait_healthy(proc, url, cfg.log_path, timeout)
        # LS silently moves to the next port when ours was taken in the meantime: then /health
        # above may have been answered by somebody else's server. Only this start's lines count
        # (a restart appends to the same log).
        with cfg.log_path.open("rb") as log:
            log.seek(logged)
            if f"Port {port} is in use" in log.read().decode("utf-8", errors="replace"):
                raise LSStartError(f"port {port} was taken before Label Studio bound it; run the tests again")
    except BaseException:
        _stop(proc)
        raise
    return proc


def start_server(
    session_dir: Path,
    *,
    venv: Path,
    template: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT_S,
) -> LSServer:
    """Start Label Studio on a free loopback port with a data dir under ``session_dir``.

    Args:
        session_dir: An empty directory owned by the caller (data dir, document root, log).
        venv: The Label Studio venv.
        template: A migrated data dir to copy (:func:`ensure_template`); None migrates in place.
        extra_env: More server variables, e.g. ``{"ML_TIMEOUT_PREDICT": "200"}``.
        timeout: Seconds to wait for ``/health``.

    Returns:
        The running server; the caller must :meth:`LSServer.stop` it.

    Raises:
        LSStartError: The server exited, did not become healthy, or moved to another port.
    """
    data_dir = session_dir / "data"
    if template is not None:
        session_dir.mkdir(parents=True, exist_ok=True)
        if data_dir.exists():
            raise LSStartError(f"{data_dir} exists already: give each server an empty session dir")
        # `cp -a` keeps the sqlite file's mode and times; the copy is ~1.5 MB.
        subprocess.run(["cp", "-a", str(template), str(data_dir)], check=True)
    cfg = ServerConfig(
        venv=venv,
        data_dir=data_dir,
        document_root=session_dir / "files",
        home=session_dir / "home",
        log_path=session_dir / "label-studio.log",
        extra_env=dict(extra_env or {}),
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    proc = _launch(cfg, port, timeout)
    return LSServer(
        url=url,
        api_key=USER_TOKEN,
        username=USERNAME,
        password=PASSWORD,
        version=ls_version(venv),
        config=cfg,
        process=proc,
        start_seconds=time.monotonic() - started,
    )


# --- the client ---------------------------------------------------------------------------------
def _as_dict(obj: Any) -> dict[str, Any]:
    # SDK objects are pydantic models; plain dicts pass through (raw HTTP answers).
    if isinstance(obj, dict):
        return obj
    dumped: dict[str, Any] = obj.model_dump(mode="json")
    return dumped


class LSClient:
    """The Label Studio calls the end-to-end tests need, over one SDK client and one httpx client.

    Both clients get the base URL and key explicitly (the SDK would otherwise read
    ``LABEL_STUDIO_API_KEY`` and default to ``localhost:8000``). Methods return plain JSON dicts,
    so tests see exactly what LS stores.

    Args:
        url: Label Studio base URL.
        api_key: A legacy token or a personal access token (the SDK exchanges a PAT for a JWT
            access token itself).
        timeout: Seconds per request.
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)  # type: ignore[no-untyped-call]
        # Raw calls (multipart upload, media, export) use the legacy header; with a PAT use
        # :meth:`headers`, which goes through the SDK's token refresh.
        self.http = httpx.Client(base_url=self.url, timeout=timeout)

    @classmethod
    def for_server(cls, server: LSServer) -> LSClient:
        """A client authenticated as the server's admin with the legacy token."""
        return cls(server.url, server.api_key)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()

    def __enter__(self) -> LSClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def headers(self) -> dict[str, str]:
        """The auth header the SDK sends (``Token <key>``, or ``Bearer <access>`` for a PAT)."""
        wrapper = self.sdk._client_wrapper  # the SDK keeps its auth logic here (JWT refresh included)
        hdrs: dict[str, str] = wrapper.get_headers()
        return {"Authorization": hdrs["Authorization"]}

    # --- projects and tasks ---------------------------------------------------------------------
    def create_project(self, label_config: str, *, title: str | None = None, **settings: Any) -> int:
        """Create a project and return its id.

        Args:
            label_config: The labeling config XML.
            title: Defaults to a unique ``e2e-<hex>`` (LS wants at least 3 characters).
            **settings: More ``projects.create`` fields (``model_version``,
                ``evaluate_predictions_automatically``, ``show_collab_predictions``, ...).
        """
        project = self.sdk.projects.create(
            title=title or f"e2e-{uuid.uuid4().hex[:8]}", label_config=label_config, **settings
        )
        assert project.id is not None
        return int(project.id)

    def upload_images(self, project: int, paths: Sequence[Path]) -> list[int]:
        """Upload image files (multipart ``POST /api/projects/{id}/import``); one task each.

        Returns:
            The new task ids, in upload order (``data.image`` is ``/data/upload/<pid>/<uuid>-name``).
        """
        names = [path.name for path in paths]
        if len(set(names)) != len(names):
            # LS walks request.FILES by field name, so a repeated name would drop files silently.
            raise ValueError(f"upload file names must be unique, got {names}")
        files = {path.name: (path.name, path.read_bytes(), "image/jpeg") for path in paths}
        resp = self.http.post(
            f"/api/projects/{project}/import",
            params={"return_task_ids": "true"},
            files=files,
            headers=self.headers(),
        )
        resp.raise_for_status()
        ids: list[int] = resp.json()["task_ids"]
        return ids

    def stage_local_files(self, document_root: Path, paths: Sequence[Path], subdir: str = "images") -> Path:
        """Copy images under the server's document root (never into the repository).

        Returns:
            The directory they were copied to (``<document_root>/<subdir>``).
        """
        target = document_root / subdir
        target.mkdir(parents=True, exist_ok=True)
        for path in paths:
            # A copy, not a symlink: LS resolves the served path and refuses one outside its root.
            shutil.copy2(path, target / path.name)
        return target

    def import_local_files(
        self, project: int, document_root: Path, paths: Sequence[Path], *, subdir: str = "images"
    ) -> list[int]:
        """Serve images as local files: stage them, add a local import storage, import tasks.

        The storage's path must be a prefix of every file's directory, or LS answers 404 on
        ``/data/local-files/?d=...`` (environment.md §3).

        Returns:
            The new task ids; ``data.image`` is ``/data/local-files/?d=<subdir>/<name>``.
        """
        target = self.stage_local_files(document_root, paths, subdir)
        self.sdk.import_storage.local.create(
            project=project, path=str(target), use_blob_urls=True, title=f"local {subdir}"
        )
        tasks = [ImportApiRequest(data={"image": f"/data/local-files/?d={subdir}/{path.name}"}) for path in paths]
        answer = self.sdk.projects.import_tasks(id=project, request=tasks, return_task_ids=True)
        # Community LS answers synchronously with `task_ids`, an extra field of the SDK's model.
        return list(getattr(answer, "task_ids", None) or [])

    def tasks(self, project: int) -> list[dict[str, Any]]:
        """All tasks of a project, as JSON dicts."""
        pager: Iterable[Any] = self.sdk.tasks.list(project=project)
        return [_as_dict(task) for task in pager]

    def get_media(self, url: str, *, auth: bool = True) -> httpx.Response:
        """GET a task's media URL (relative ``/data/...`` or absolute), without following redirects."""
        return self.http.get(url, headers=self.headers() if auth else {}, follow_redirects=False)

    # --- ML backend and predictions ---------------------------------------------------------------
    def connect_ml_backend(self, project: int, url: str, *, title: str = "assistant", **fields: Any) -> int:
        """Register an ML backend (LS then calls its ``/health`` and ``/setup``); returns its id.

        Args:
            project: The project id.
            url: The backend's base URL.
            title: Shown in the LS UI.
            **fields: More ``ml.create`` fields (``auth_method``, ``basic_auth_user``,
                ``basic_auth_pass``, ``extra_params``, ``is_interactive``, ``timeout``).
        """
        backend = self.sdk.ml.create(project=project, url=url, title=title, **fields)
        assert backend.id is not None
        return int(backend.id)

    def retrieve_predictions(self, project: int, task_ids: Sequence[int] | None = None) -> dict[str, Any]:
        """Run the Data Manager action "Retrieve Predictions" (one synchronous ``/predict``).

        Args:
            project: The project id.
            task_ids: The selection; None selects every task.
        """
        selected = PrepareParamsRequestRequestSelectedItemsIncluded(
            all_=task_ids is None, included=list(task_ids or [])
        )
        answer = self.sdk.actions.create(id="retrieve_tasks_predictions", project=project, selected_items=selected)
        return _as_dict(answer) if answer is not None else {}

    def predictions(self, *, project: int | None = None, task: int | None = None) -> list[dict[str, Any]]:
        """Predictions of a project or a task, as JSON dicts."""
        return [_as_dict(pred) for pred in self.sdk.predictions.list(project=project, task=task)]

    def create_prediction(
        self, task: int, result: list[dict[str, Any]], *, model_version: str, score: float | None = None
    ) -> dict[str, Any]:
        """Create a prediction directly (as the background publish path does)."""
        created = self.sdk.predictions.create(task=task, result=result, score=score, model_version=model_version)
        return _as_dict(created)

    # --- annotations and export -------------------------------------------------------------------
    def create_annotation(
        self,
        task: int,
        result: list[dict[str, Any]],
        *,
        parent_prediction: int | None = None,
        lead_time: float = 1.0,
    ) -> dict[str, Any]:
        """Create an annotation (fires ANNOTATION_CREATED at connected backends)."""
        created = self.sdk.annotations.create(
            id=task, result=result, lead_time=lead_time, was_cancelled=False, parent_prediction=parent_prediction
        )
        return _as_dict(created)

    def update_annotation(self, annotation: int, result: list[dict[str, Any]]) -> dict[str, Any]:
        """Replace an annotation's result (fires ANNOTATION_UPDATED)."""
        return _as_dict(self.sdk.annotations.update(id=annotation, result=result))

    def annotations(self, task: int) -> list[dict[str, Any]]:
        """Annotations of a task, as JSON dicts."""
        return [_as_dict(ann) for ann in self.sdk.annotations.list(id=task)]

    def export_json(self, project: int) -> list[dict[str, Any]]:
        """The project's JSON export as ``projects.exports.as_json`` gives it (what the UI's Export gives).

        In the Community edition this is the synchronous ``GET /api/projects/{id}/export``: tasks
        with full annotations, but **predictions as ids only**. Use :meth:`export_snapshot` to get
        the predictions' bodies.
        """
        exported: list[dict[str, Any]] = self.sdk.projects.exports.as_json(project)
        return exported

    def export_snapshot(self, project: int, *, timeout: float = 60.0) -> list[dict[str, Any]]:
        """A JSON export snapshot with predictions expanded (``serialization_options``).

        ``POST /api/projects/{id}/exports/`` with ``{"predictions": {"only_id": false}}``, polled
        until completed, then downloaded. Community LS builds the snapshot synchronously.
        """
        exports = self.sdk.projects.exports
        expand = SerializationOptionRequest(only_id=False)
        created = exports.create(
            project,
            title=f"e2e-{uuid.uuid4().hex[:8]}",
            serialization_options=SerializationOptionsRequest(predictions=expand, drafts=expand),
        )
        assert created.id is not None
        status, deadline = created.status, time.monotonic() + timeout
        while status != "completed":
            if status == "failed" or time.monotonic() > deadline:
                raise RuntimeError(f"export snapshot {created.id} ended as {status!r}")
            time.sleep(0.25)
            status = exports.get(project, created.id).status
        body = b"".join(exports.download(project, created.id, export_type="JSON"))
        exported: list[dict[str, Any]] = json.loads(body)
        return exported

    def export_raw(self, project: int, export_type: str = "JSON") -> Any:
        """The project's export through ``GET /api/projects/{id}/export`` (``JSON``, ``JSON_MIN``, ...)."""
        resp = self.http.get(
            f"/api/projects/{project}/export",
            params={"exportType": export_type, "download_all_tasks": "true"},
            headers=self.headers(),
        )
        resp.raise_for_status()
        return resp.json()

    # --- tokens -----------------------------------------------------------------------------------
    def create_personal_access_token(self) -> str:
        """A new personal access token (a JWT refresh token) of the current user."""
        token: str = self.sdk.tokens.create().token
        return token


# --- a stand-in ML backend -----------------------------------------------------------------------
PredictResponder = Callable[[dict[str, Any]], dict[str, Any]]


def _default_predict(body: dict[str, Any]) -> dict[str, Any]:
    return {"results": [{"result": [], "score": 0.5, "model_version": "stub-v1"} for _ in body.get("tasks", [])]}


class RecordingBackend:
    """A minimal ML backend on a loopback port that records what Label Studio sends it.

    It answers ``/health``, ``/setup`` (``model_version``), ``/predict`` (through ``respond``) and
    ``/webhook`` (201), and keeps every request as ``(method, path, json body)`` in
    :attr:`requests`. Use it to pin LS's side of the protocol without our real backend.

    Args:
        respond: Builds the ``/predict`` answer from the request body.
        model_version: What ``/setup`` reports.
        host: The address it listens on (a non-loopback one tests Label Studio's address checks).
    """

    def __init__(
        self, respond: PredictResponder = _default_predict, *, model_version: str = "stub-v1", host: str = "127.0.0.1"
    ) -> None:
        self.respond = respond
        self.model_version = model_version
        self.requests: list[tuple[str, str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, name="recording-backend", daemon=True)

    @property
    def url(self) -> str:
        """Base URL to give ``ml.create``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def bodies(self, path: str) -> list[Any]:
        """The JSON bodies received on ``path`` (e.g. ``"/predict"``), oldest first."""
        with self._lock:
            return [body for _, got, body in self.requests if got == path]

    def __enter__(self) -> RecordingBackend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _answer(self, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append((method, path, body))
        if path in ("/", "/health"):
            return 200, {"status": "UP", "model_class": "RecordingBackend"}
        if path == "/setup":
            return 200, {"model_version": self.model_version}
        if path == "/predict":
            return 200, self.respond(body)
        if path == "/webhook":
            return 201, {}
        return 404, {"detail": f"no route {path}"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                status, answer = backend._answer(self.command, self.path.split("?")[0], body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            # http.server dispatches on these names.
            do_GET = _serve
            do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("recording backend: " + format, *args)

        return Handler


@contextlib.contextmanager
def running_server(session_dir: Path, **kwargs: Any) -> Iterator[LSServer]:
    """Start a server (from the cached template) and stop it on exit, whatever happens.

    Raises:
        LSStartError: No Label Studio venv, or the server failed to start.
    """
    venv = find_ls_venv()
    if venv is None:
        raise LSStartError("no Label Studio venv: set ASSISTANT_LS_VENV or run `make ls-venv`")
    server = start_server(session_dir, venv=venv, template=ensure_template(venv), **kwargs)
    try:
        yield server
    finally:
        server.stop()
