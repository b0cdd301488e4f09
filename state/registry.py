"""The model registry: versions with lineage, one ``current`` pointer per project, atomic promote/rollback.

Stdlib and pydantic only: the HTTP backend reads it for ``/setup`` (``current(project).version``)
and must stay free of torch. The registry lives on a directory every worker can see
(``Settings.models_dir``)::

    <models_dir>/
      .lock                          advisory lock (flock) serialising writers across processes
      versions/<version>/            a checkpoint (model.safetensors, sidecar.json) + record.json
      projects/<project>/current.json    {"version": ..., "previous": [...], "updated_at": ...}
      projects/<project>/history.jsonl   append-only log of promotions and rollbacks

Crash safety: a version directory is assembled under a temporary name and renamed into place,
and the pointer is rewritten with ``os.replace``, so a reader sees the old or the new state,
never half of one. The pointer carries its own rollback stack (``previous``), so promote and
rollback are each one atomic write; the history log is an audit trail written after it.

A project without a pointer uses the base model (``Settings.base_model``): a checkpoint directory
whose ``sidecar.json`` names its version, or a backbone spec whose version is derived from the
spec string (``base-<sha256[:12]>``).

Example:
    >>> reg = Registry(Path("/srv/assistant/models"), "/srv/assistant/base")   # doctest: +SKIP
    >>> rec = reg.register(Path("/tmp/round-7"), parent="mkt-1", project=3)      # doctest: +SKIP
    >>> reg.promote(3, rec.version)                                              # doctest: +SKIP
    >>> reg.current(3).version                                                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from errors import AssistantError

__all__ = ["Project", "PromotionEvent", "Registry", "RegistryError", "VersionRecord", "derive_base_version"]

logger = logging.getLogger(__name__)


class RegistryError(AssistantError):
    """An unknown version or project, or an unreadable registry file."""


SIDECAR_FILE = "sidecar.json"
RECORD_FILE = "record.json"
# Version ids become directory names: letters, digits and . _ - only, no leading dot.
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# Temporary version directories older than this are leftovers of a crashed register().
_STALE_TMP_S = 3600.0

Project = int | str | None


class VersionRecord(BaseModel):
    """One model version and its lineage.

    Attributes:
        version: The version id (the checkpoint sidecar's ``version``).
        parent: The version it was trained from (None for the base model).
        project: The project it was trained for (None for the base model).
        round_id: The fine-tuning round that produced it.
        manifest_hash: Digest of the training data manifest.
        metrics: Evaluation figures recorded at registration.
        created_at: ISO timestamp (UTC) of the registration.
        checkpoint: The checkpoint directory; for the base model, ``Settings.base_model``
            (a directory or a backbone spec).
        image_tower_version: Digest of the image side (the feature-cache key), when known.
        is_base: True for the base model.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: str
    parent: str | None = None
    project: str | None = None
    round_id: str | None = None
    manifest_hash: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    created_at: str = ""
    checkpoint: str
    image_tower_version: str | None = None
    is_base: bool = False


class PromotionEvent(BaseModel):
    """One line of a project's history: the pointer moved from ``previous`` to ``version``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event: Literal["promote", "rollback"]
    project: str
    version: str
    previous: str
    at: str


class _Pointer(BaseModel):
    version: str
    # The rollback stack: versions that were current before, most recent last.
    previous: list[str] = Field(default_factory=list)
    updated_at: str = ""


def derive_base_version(spec: str) -> str:
    """The version of a base model given as a backbone spec: stable for a given string."""
    return "base-" + hashlib.sha256(spec.strip().encode("utf-8")).hexdigest()[:12]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _fsync_dir(directory: Path) -> None:
    # Makes a rename durable; harmless where directories cannot be opened.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        fix = "restore it from a backup"
        raise RegistryError(f"the {what} {path} is not valid JSON", why=str(exc), fix=fix) from exc
    if not isinstance(doc, dict):
        raise RegistryError(f"the {what} {path} is not a JSON object", fix="restore it from a backup")
    return doc


class Registry:
    """The model registry on a shared directory (see the module docstring).

    Safe under concurrent processes: writers take an exclusive ``flock`` on ``<models_dir>/.lock``;
    readers take no lock because every file they read is replaced atomically.

    Args:
        models_dir: The registry directory (``Settings.models_dir``); created on the first write.
        base_model: ``Settings.base_model``: a checkpoint directory or a backbone spec.
    """

    def __init__(self, models_dir: Path, base_model: str) -> None:
        self.root = Path(models_dir)
        self.base_model = str(base_model)

    # --- paths ----------------------------------------------------------------------------------
    @property
    def _versions(self) -> Path:
        return self.root / "versions"

    def _project_dir(self, project: Project) -> Path:
        return self.root / "projects" / _project_key(project)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # --- base model -----------------------------------------------------------------------------
    def base_version(self) -> str:
        """The base model's version: its sidecar's ``version``, or derived from the spec string."""
        sidecar = Path(self.base_model) / SIDECAR_FILE
        if sidecar.is_file():
            version = _read_json(sidecar, "base model sidecar").get("version")
            if not isinstance(version, str) or not version:
                raise RegistryError(
                    f"the base model sidecar {sidecar} has no version",
                    fix="save the base model with assistant.checkpoint.save_checkpoint",
                )
            return version
        return derive_base_version(self.base_model)

    def base_record(self) -> VersionRecord:
        """The base model as a :class:`VersionRecord`."""
        sidecar_path = Path(self.base_model) / SIDECAR_FILE
        sidecar = _read_json(sidecar_path, "base model sidecar") if sidecar_path.is_file() else {}
        return VersionRecord(
            version=self.base_version(),
            parent=None,
            metrics=_float_metrics(sidecar.get("metrics")),
            created_at=str(sidecar.get("created_at", "")),
            checkpoint=self.base_model,
            image_tower_version=sidecar.get("image_tower_version"),
            is_base=True,
        )

    # --- reading --------------------------------------------------------------------------------
    def get(self, version: str) -> VersionRecord:
        """The record of a registered version, or of the base model.

        Raises:
            RegistryError: The version is neither registered nor the base model's.
        """
        _check_version(version)
        path = self._versions / version / RECORD_FILE
        if path.is_file():
            try:
                return VersionRecord.model_validate(_read_json(path, "version record"))
            except ValidationError as exc:
                raise RegistryError(f"the version record {path} is invalid", why=str(exc)) from exc
        if version == self.base_version():
            return self.base_record()
        known = [r.version for r in self.list_versions()][-10:]
        raise RegistryError(
            f"model version {version!r} is not in the registry at {self.root}",
            why=f"known versions (latest 10): {known or 'none'}; the base model is {self.base_version()!r}",
            fix="register the checkpoint first (Registry.register) or pick a listed version",
        )

    def _pointer(self, project: Project) -> _Pointer | None:
        path = self._project_dir(project) / "current.json"
        try:
            doc = _read_json(path, "current-version pointer")
        except FileNotFoundError:
            return None
        try:
            return _Pointer.model_validate(doc)
        except ValidationError as exc:
            raise RegistryError(f"the pointer {path} is invalid", why=str(exc), fix="roll back or promote") from exc

    def current(self, project: Project) -> VersionRecord:
        """The version serving ``project`` (the base model when it has no pointer, or for None)."""
        if project is None:
            return self.base_record()
        pointer = self._pointer(project)
        return self.base_record() if pointer is None else self.get(pointer.version)

    def list_versions(self, project: Project = None) -> list[VersionRecord]:
        """Registered versions, oldest first; only those of ``project`` when given (base excluded)."""
        key = None if project is None else _project_key(project)
        records = []
        if not self._versions.is_dir():
            return []
        for entry in self._versions.iterdir():
            record_path = entry / RECORD_FILE
            if entry.name.startswith(".") or not record_path.is_file():
                continue
            record = VersionRecord.model_validate(_read_json(record_path, "version record"))
            if key is None or record.project == key:
                records.append(record)
        return sorted(records, key=lambda r: (r.created_at, r.version))

    def history(self, project: Project) -> list[PromotionEvent]:
        """Promotions and rollbacks of ``project``, oldest first."""
        path = self._project_dir(project) / "history.jsonl"
        if not path.is_file():
            return []
        events = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                events.append(PromotionEvent.model_validate_json(line))
            except ValidationError:
                # A torn last line (crash mid-append) is skipped: the pointer is the truth.
                logger.warning("skipping an unreadable line in %s", path)
        return events

    def path_of(self, version: str) -> Path:
        """The checkpoint directory of a version.

        Raises:
            RegistryError: Unknown version, or the base model is a backbone spec (no directory).
        """
        record = self.get(version)
        path = Path(record.checkpoint)
        if not (path / SIDECAR_FILE).is_file():
            raise RegistryError(
                f"version {version!r} has no checkpoint directory",
                why=f"it is the base backbone spec {record.checkpoint!r}",
                fix="use source_of(version) to load it",
            )
        return path

    def source_of(self, version: str) -> str:
        """What ``assistant.checkpoint.load_model`` takes for a version: a directory or a spec."""
        return self.get(version).checkpoint

    # --- writing --------------------------------------------------------------------------------
    def register(
        self,
        checkpoint_dir: Path,
        *,
        parent: str | None = None,
        project: Project = None,
        round_id: str | None = None,
        metrics: dict[str, float] | None = None,
        manifest_hash: str | None = None,
        move: bool = False,
    ) -> VersionRecord:
        """Add a checkpoint as ``versions/<version>/`` (the version id is its sidecar's ``version``).

        Idempotent: registering the same checkpoint again (same weights digest) returns the
        existing record. Lineage arguments default to what the sidecar records.

        Args:
            checkpoint_dir: A checkpoint directory (``model.safetensors`` + ``sidecar.json``).
            parent: The version it was trained from.
            project: The project it belongs to.
            round_id: The round that produced it.
            metrics: Evaluation figures.
            manifest_hash: Digest of the training data manifest.
            move: Move the directory instead of copying it (same filesystem only).

        Raises:
            RegistryError: Not a checkpoint, or another checkpoint already holds its version id.
        """
        src = Path(checkpoint_dir)
        sidecar = _read_json(src / SIDECAR_FILE, "checkpoint sidecar") if (src / SIDECAR_FILE).is_file() else None
        if sidecar is None:
            raise RegistryError(f"{src} is not a checkpoint directory", why=f"{SIDECAR_FILE} is missing")
        version = str(sidecar.get("version", ""))
        _check_version(version)
        if project is not None:
            _project_key(project)
        record = VersionRecord(
            version=version,
            parent=parent if parent is not None else sidecar.get("parent_version"),
            project=None if project is None else _project_key(project),
            round_id=round_id if round_id is not None else sidecar.get("round_id"),
            manifest_hash=manifest_hash if manifest_hash is not None else sidecar.get("data_manifest_hash"),
            metrics=dict(metrics) if metrics is not None else _float_metrics(sidecar.get("metrics")),
            created_at=_now(),
            checkpoint=str(self._versions / version),
            image_tower_version=sidecar.get("image_tower_version"),
        )
        with self._locked():
            dest = self._versions / version
            if dest.exists():
                return self._existing(dest, sidecar, src)
            self._versions.mkdir(parents=True, exist_ok=True)
            self._clean_stale_tmp()
            tmp = self._versions / f".tmp-{uuid.uuid4().hex}"
            try:
                if move:
                    os.rename(src, tmp)
                else:
                    shutil.copytree(src, tmp)
                (tmp / RECORD_FILE).write_text(record.model_dump_json(indent=2), encoding="utf-8")
                for file in tmp.iterdir():
                    with open(file, "rb") as fh:
                        os.fsync(fh.fileno())
                os.rename(tmp, dest)
            except BaseException:
                if move and tmp.exists() and not src.exists():
                    os.rename(tmp, src)
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _fsync_dir(self._versions)
        logger.info("registered model version %s (parent %s, project %s)", version, record.parent, record.project)
        return record

    def _existing(self, dest: Path, sidecar: dict[str, Any], src: Path) -> VersionRecord:
        existing = _read_json(dest / SIDECAR_FILE, "checkpoint sidecar")
        if existing.get("tensors_sha256") != sidecar.get("tensors_sha256"):
            raise RegistryError(
                f"version {sidecar.get('version')!r} is already registered with other weights",
                why=f"{src} and {dest} share the version id but not the weights digest",
                fix="save the new checkpoint with another version id",
            )
        return VersionRecord.model_validate(_read_json(dest / RECORD_FILE, "version record"))

    def _clean_stale_tmp(self) -> None:
        for entry in self._versions.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                if time.time() - entry.stat().st_mtime > _STALE_TMP_S:
                    shutil.rmtree(entry, ignore_errors=True)

    def promote(self, project: Project, version: str) -> VersionRecord:
        """Make ``version`` the project's current version (idempotent).

        Raises:
            RegistryError: Unknown version, or no project given.
        """
        key = _required_project(project)
        record = self.get(version)
        with self._locked():
            pointer = self._pointer(key)
            previous = self.base_version() if pointer is None else pointer.version
            if previous == version:
                return record
            stack = [] if pointer is None else [*pointer.previous, pointer.version]
            self._write_pointer(key, _Pointer(version=version, previous=stack, updated_at=_now()))
            self._log(key, "promote", version, previous)
        logger.info("project %s: promoted %s (was %s)", key, version, previous)
        return record

    def rollback(self, project: Project) -> VersionRecord:
        """Return the project to the version that was current before the last promotion.

        Rolling back the first promotion returns the project to the base model.

        Raises:
            RegistryError: The project is already on the base model with nothing to roll back.
        """
        key = _required_project(project)
        with self._locked():
            pointer = self._pointer(key)
            if pointer is None:
                raise RegistryError(
                    f"project {key} has nothing to roll back",
                    why="it already uses the base model",
                    fix="promote a version first",
                )
            path = self._project_dir(key) / "current.json"
            if pointer.previous:
                target = pointer.previous[-1]
                self._write_pointer(key, _Pointer(version=target, previous=pointer.previous[:-1], updated_at=_now()))
            else:
                target = self.base_version()
                os.unlink(path)
                _fsync_dir(path.parent)
            self._log(key, "rollback", target, pointer.version)
        logger.info("project %s: rolled back from %s to %s", key, pointer.version, target)
        return self.current(key)

    def _write_pointer(self, project: str, pointer: _Pointer) -> None:
        _atomic_write_json(self._project_dir(project) / "current.json", pointer.model_dump(mode="json"))

    def _log(self, project: str, event: Literal["promote", "rollback"], version: str, previous: str) -> None:
        line = PromotionEvent(event=event, project=project, version=version, previous=previous, at=_now())
        path = self._project_dir(project) / "history.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line.model_dump_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _float_metrics(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if isinstance(v, int | float)}


def _check_version(version: str) -> None:
    if not _VERSION_RE.match(version or ""):
        raise RegistryError(
            f"invalid model version id {version!r}",
            why="version ids are directory names: letters, digits, '.', '_' and '-', at most 128, no leading dot",
            fix="save the checkpoint with a version such as 'mkt-3f2a9c1b0d4e'",
        )


def _project_key(project: Project) -> str:
    key = str(project)
    if project is None or not _PROJECT_RE.match(key):
        raise RegistryError(
            f"invalid project id {project!r}",
            fix="pass the Label Studio project id (an integer) or a name of letters, digits, '_' and '-'",
        )
    return key


def _required_project(project: Project) -> str:
    if project is None:
        raise RegistryError("a project is required", why="the base model is shared by every project")
    return _project_key(project)
