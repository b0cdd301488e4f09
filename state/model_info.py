"""What serves a project, read from files only: a real model or the offline demo one, and its calibration.

Light on purpose (stdlib and the registry; no torch): the backend's ``/setup`` log line, ``assistant
status``, ``assistant doctor`` and the workers' answer to ``assistant_info`` all say the same.

**The offline demo model.** The project ships ``assets/world-tiny``: a 64-pixel CLIP-style model
pretrained on the synthetic benchmark world (``assistant world pretrain``), so that ``make demo``
and the tests run with no download. It knows that world's 49 tags on its renders; on real photos
its tags are noise. :func:`is_demo_model` recognises it, and any other model pretrained on the
world, by the ``generator_version`` its ``manifest.json`` records.

**Calibration state** (:func:`calibration_state`) of the model serving a project:

- ``default``: never measured; ``Calibrator.default()``, a guess made for CLIP ViT-B cosine scores
  (a backbone spec with no ``calibration.json``, e.g. ``ViT-B-16:laion2b_s34b_b88k``);
- ``prior``: one global map measured on the base model's own scores (``calibration.json`` beside
  the weights, as the bundled model has);
- ``platt``: fitted per label on the project's annotations by a fine-tuning round.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from state.registry import SIDECAR_FILE, Project, Registry, VersionRecord
from state.settings import BUNDLED_MODEL_DIR

__all__ = [
    "DEMO_MODEL_FIX",
    "DEMO_MODEL_WHAT",
    "ServedModel",
    "calibration_state",
    "is_demo_model",
    "model_directory",
    "served_model",
]

logger = logging.getLogger(__name__)

#: What the bundled model is, in one sentence (status, doctor, the backend's log).
DEMO_MODEL_WHAT = (
    "the offline demo model (a 64-pixel model trained only on the synthetic benchmark world's renders): "
    "on real photos its tags are noise"
)
#: How to serve a real model instead.
DEMO_MODEL_FIX = (
    "set ASSISTANT_BASE_MODEL=ViT-B-16:laion2b_s34b_b88k (pretrained weights, downloaded once) "
    "or to an MKT checkpoint directory, and restart the workers and the backend"
)
_PRIOR_FILE = "calibration.json"
_MANIFEST_FILE = "manifest.json"
# What `assistant world pretrain` records in manifest.json (benchworld/world/pretrain.py).
_WORLD_MARKER = "generator_version"
_CALIBRATION_NOTES = {
    "default": "never measured: a guess for CLIP ViT-B scores until a round fits it on this project's annotations",
    "prior": "the base model's prior, measured once on its own scores; a round fits it per label on this project",
    "platt": "fitted per label on this project's annotations by a fine-tuning round",
}


def model_directory(source: str) -> Path | None:
    """The local directory behind a base-model spec (``DIR``, ``local-dir:DIR``, ``hf:DIR``), or None."""
    text = source.strip()
    for prefix in ("local-dir:", "hf:"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    path = Path(text).expanduser()
    return path if path.is_dir() else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def is_demo_model(source: str) -> bool:
    """Whether a model source (a spec or a directory) is the offline demo model or another world-trained one."""
    directory = model_directory(source)
    if directory is None:
        return False
    if directory.resolve() == BUNDLED_MODEL_DIR.resolve():
        return True
    return _WORLD_MARKER in _read_json(directory / _MANIFEST_FILE)


def calibration_state(record: VersionRecord) -> str:
    """``default``, ``prior`` or ``platt`` (module docstring) for a registry version."""
    directory = model_directory(record.checkpoint)
    if directory is None:
        return "default"
    if (directory / SIDECAR_FILE).is_file():
        method = _read_json(directory / SIDECAR_FILE).get("calibration", {})
        return str(method.get("method") or "default") if isinstance(method, dict) else "default"
    if (directory / _PRIOR_FILE).is_file():
        return str(_read_json(directory / _PRIOR_FILE).get("method") or "prior")
    return "default"


@dataclass(frozen=True)
class ServedModel:
    """The model serving a project.

    Attributes:
        version: The registry version.
        is_base: True when the project has no promoted version of its own.
        demo: It is the offline demo model, or was fine-tuned from it.
        calibration: :func:`calibration_state`.
        calibration_note: What that state means, in one sentence.
    """

    version: str
    is_base: bool
    demo: bool
    calibration: str
    calibration_note: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "version": self.version,
            "is_base": self.is_base,
            "demo": self.demo,
            "calibration": self.calibration,
            "calibration_note": self.calibration_note,
        }


def _base_source(record: VersionRecord) -> str:
    """The base model a version was built on: a checkpoint's recorded backbone, else the record's own source."""
    directory = model_directory(record.checkpoint)
    if directory is not None and (directory / SIDECAR_FILE).is_file():
        spec = _read_json(directory / SIDECAR_FILE).get("backbone_spec")
        if isinstance(spec, str) and spec:
            return spec
    return record.checkpoint


def served_model(registry: Registry, project: Project) -> ServedModel:
    """What serves ``project`` (the base model for None).

    Raises:
        workers.errors.RegistryError: The registry cannot be read.
    """
    record = registry.current(project)
    state = calibration_state(record)
    return ServedModel(
        version=record.version,
        is_base=record.is_base,
        demo=is_demo_model(_base_source(record)),
        calibration=state,
        calibration_note=_CALIBRATION_NOTES.get(state, "unknown calibration method"),
    )
