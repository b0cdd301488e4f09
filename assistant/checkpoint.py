"""Self-describing, safe MKT checkpoints: safetensors weights plus a JSON sidecar.

A checkpoint is a directory::

    <dir>/model.safetensors   the tensors (never a pickle)
    <dir>/sidecar.json        everything needed to rebuild and audit the model

When the base backbone has real weights, only the tensors that training can change are saved
(the prompt context and the image-side parameters stage 1 tuned): a ViT-B/16 round then costs
tens of MB instead of 600 MB. The base is rebuilt through the factory and must match the
recorded weights digest. A checkpoint of a randomly initialised base (tests) saves everything.

Loading checks the sidecar against the tensors and the base, and refuses any mismatch with a
:class:`~assistant.errors.CheckpointError` that says what differs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from assistant.calibration import Calibrator
from assistant.config import HeadConfig, PromptConfig, from_dict, to_dict
from assistant.devices import resolve_device
from assistant.errors import CheckpointError, ModelLoadError
from assistant.factory import BackboneSpec, create_backbone
from assistant.labels import LabelSet
from assistant.model import MKTModel
from errors import AssistantError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "PRIOR_FILE",
    "LoadedModel",
    "Sidecar",
    "is_checkpoint",
    "load_checkpoint",
    "load_model",
    "read_prior",
    "read_sidecar",
    "save_checkpoint",
]

FORMAT = "mkt-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "sidecar.json"
# A backbone's calibration prior (Calibrator.to_dict), next to the weights of a model directory.
PRIOR_FILE = "calibration.json"


@dataclass(frozen=True)
class Sidecar:
    """The JSON sidecar of a checkpoint.

    Attributes:
        version: The model version (what ``model_version`` in Label Studio starts with).
        backbone_spec: The factory spec of the base backbone.
        backbone_version: Digest of the base weights (``random:<name>`` for random bases).
        full_weights: True when every tensor is saved (random base), False for a delta.
        head, prompt: The configurations.
        seen_labels: The labels the model was trained on, in order.
        calibration: The calibrator's dict (``Calibrator.to_dict``).
        parent_version: The version this one was trained from.
        round_id: The fine-tuning round that produced it.
        metrics: Evaluation figures (held-out mAP, F1@K ...).
        data_manifest_hash: Digest of the training data manifest.
        image_tower_version: Digest of the image side (the feature-cache key).
        tensors_sha256: Digest of the weights file.
        created_at: ISO timestamp (UTC).
        extra: Free-form provenance (training configs, data sizes).
    """

    version: str
    backbone_spec: str
    backbone_version: str
    full_weights: bool
    head: dict[str, Any]
    prompt: dict[str, Any]
    seen_labels: list[str]
    calibration: dict[str, Any]
    image_tower_version: str
    tensors_sha256: str = ""
    parent_version: str | None = None
    round_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    data_manifest_hash: str | None = None
    created_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The sidecar document."""
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION}
        doc.update(self.__dict__)
        doc["seen_fingerprint"] = LabelSet(tuple(self.seen_labels)).fingerprint
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any], path: Path) -> Sidecar:
        """Parse and check a sidecar document."""
        if doc.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not an MKT checkpoint sidecar", fix="point at a checkpoint directory")
        if doc.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path} has checkpoint format version {doc.get('format_version')}, this code reads {FORMAT_VERSION}",
                fix="upgrade the labeling assistant or convert the checkpoint",
            )
        names = cls.__dataclass_fields__
        try:
            sidecar = cls(**{k: v for k, v in doc.items() if k in names})
        except TypeError as exc:
            raise CheckpointError(f"the sidecar {path} is incomplete", why=str(exc)) from exc
        fingerprint = LabelSet(tuple(sidecar.seen_labels)).fingerprint
        if doc.get("seen_fingerprint") not in (None, fingerprint):
            raise CheckpointError(
                f"the seen-label fingerprint in {path} does not match its label list",
                why="the sidecar was edited or corrupted",
                fix="restore the checkpoint from the registry",
            )
        return sidecar


@dataclass
class LoadedModel:
    """A model with its calibrator and sidecar."""

    model: MKTModel
    calibrator: Calibrator
    # None for a model built from a plain backbone spec (zero-shot, never saved yet).
    sidecar: Sidecar | None = None
    path: Path | None = None


def _tensors_to_save(model: MKTModel, full: bool, tuned: set[str]) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    if full:
        keys = list(state)
    else:
        keys = [k for k in state if k.startswith("prompt_learner.") or k in tuned]
    # safetensors refuses shared storage: every tensor gets its own contiguous copy.
    return {k: state[k].detach().cpu().contiguous().clone() for k in keys}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(
    loaded: LoadedModel,
    directory: Path,
    *,
    version: str | None = None,
    tuned_parameters: set[str] | None = None,
    parent_version: str | None = None,
    round_id: str | None = None,
    metrics: dict[str, float] | None = None,
    data_manifest_hash: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Sidecar:
    """Write a checkpoint directory atomically (a crash leaves no half-written directory).

    Args:
        loaded: The model and calibrator to save.
        directory: The checkpoint directory to create; it must not exist.
        version: The version string; default: derived from the weights digest.
        tuned_parameters: State-dict keys of the image side changed by training (saved in a
            delta checkpoint); default: those the model's previous sidecar listed plus none.
        parent_version, round_id, metrics, data_manifest_hash, extra: Lineage and provenance.

    Returns:
        The sidecar written.
    """
    model = loaded.model
    spec = BackboneSpec.parse(model.backbone.spec)
    full = not spec.has_weights
    previous = set(loaded.sidecar.extra.get("tuned_parameters", [])) if loaded.sidecar else set()
    tuned = sorted((tuned_parameters or set()) | previous)
    tensors = _tensors_to_save(model, full, set(tuned))
    directory = Path(directory)
    if directory.exists():
        raise CheckpointError(f"{directory} already exists", fix="save each version to a new directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        sha = _file_sha256(tmp / WEIGHTS_FILE)
        sidecar = Sidecar(
            version=version or f"mkt-{sha[:12]}",
            backbone_spec=model.backbone.spec,
            backbone_version=model.backbone.version,
            full_weights=full,
            head=to_dict(model.head_config),
            prompt=to_dict(model.prompt_config),
            seen_labels=list(model.seen_labels.names),
            calibration=loaded.calibrator.to_dict(),
            image_tower_version=model.image_tower_version(),
            tensors_sha256=sha,
            parent_version=parent_version,
            round_id=round_id,
            metrics=dict(metrics or {}),
            data_manifest_hash=data_manifest_hash,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            extra={**(extra or {}), "tuned_parameters": tuned},
        )
        with open(tmp / SIDECAR_FILE, "w", encoding="utf-8") as fh:
            json.dump(sidecar.to_json(), fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sidecar


def read_sidecar(directory: Path) -> Sidecar:
    """Read and check a checkpoint's sidecar without loading any weights."""
    path = Path(directory) / SIDECAR_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {directory}", why=f"{path.name} is missing") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"the sidecar {path} is not valid JSON", why=str(exc)) from exc
    return Sidecar.from_json(doc, path)


def load_checkpoint(
    directory: Path, *, device: str | torch.device = "cpu", base_spec: str | None = None
) -> LoadedModel:
    """Load a checkpoint directory, checking it against its sidecar.

    Args:
        directory: The checkpoint directory.
        device: Where to put the model.
        base_spec: Build the base backbone from this spec instead of the recorded one (the same
            weights at another path, e.g. inside a container); its digest must still match.

    Raises:
        CheckpointError: Missing files, a corrupt or edited file, or a base that does not match.
    """
    directory = Path(directory)
    sidecar = read_sidecar(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"no weights in {directory}", why=f"{WEIGHTS_FILE} is missing")
    if sidecar.tensors_sha256 and _file_sha256(weights) != sidecar.tensors_sha256:
        raise CheckpointError(
            f"the weights in {directory} do not match the sidecar's digest",
            why="the file was changed or truncated after it was written",
            fix="restore the checkpoint from the registry or a backup",
        )
    spec = base_spec or sidecar.backbone_spec
    try:
        backbone = create_backbone(spec, allow_random=sidecar.full_weights)
    except ModelLoadError as exc:
        raise CheckpointError(
            f"cannot rebuild the base model of {directory}", why=exc.message, fix="pass base_spec= with its location"
        ) from exc
    if not sidecar.full_weights and backbone.version != sidecar.backbone_version:
        raise CheckpointError(
            f"the base model of {directory} does not match",
            why=f"the checkpoint was trained on {sidecar.backbone_version}, the base found is {backbone.version}",
            fix="load it with the base weights it was trained on",
        )
    try:
        head = from_dict(HeadConfig, sidecar.head)
        prompt = from_dict(PromptConfig, sidecar.prompt)
    except Exception as exc:
        raise CheckpointError(f"the sidecar of {directory} has invalid configs", why=str(exc)) from exc
    model = MKTModel(backbone, head, prompt, LabelSet(tuple(sidecar.seen_labels)), version=sidecar.version)
    tensors = load_file(str(weights))
    _apply_tensors(model, tensors, strict=sidecar.full_weights, where=directory)
    calibrator = Calibrator.from_dict(sidecar.calibration)
    return LoadedModel(model.to(resolve_device(device)).eval(), calibrator, sidecar, directory)


def _apply_tensors(model: MKTModel, tensors: dict[str, torch.Tensor], *, strict: bool, where: Path) -> None:
    state = model.state_dict()
    unknown = sorted(set(tensors) - set(state))
    missing = sorted(set(state) - set(tensors)) if strict else []
    bad_shape = sorted(k for k in tensors if k in state and tensors[k].shape != state[k].shape)
    if unknown or missing or bad_shape:
        details = []
        if unknown:
            details.append(f"unexpected tensors {unknown[:5]}")
        if missing:
            details.append(f"missing tensors {missing[:5]}")
        if bad_shape:
            details.append(f"shape mismatches {bad_shape[:5]}")
        raise CheckpointError(
            f"the weights in {where} do not fit the model described by its sidecar",
            why="; ".join(details),
            fix="check the base model and the head/prompt configs recorded in sidecar.json",
        )
    model.load_state_dict(tensors, strict=False)


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is an MKT checkpoint directory."""
    return (Path(path) / SIDECAR_FILE).is_file()


def read_prior(directory: str | Path) -> Calibrator | None:
    """The calibration prior stored in a model directory (``calibration.json``), if any.

    Args:
        directory: An open_clip (or Hugging Face) model directory.

    Returns:
        The calibrator, or None when the directory holds no ``calibration.json``.

    Raises:
        ModelLoadError: The file exists but is not valid JSON or not a calibrator description.
    """
    path = Path(directory) / PRIOR_FILE
    if not path.is_file():
        return None
    try:
        return Calibrator.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, AssistantError) as exc:
        why = exc.message if isinstance(exc, AssistantError) else str(exc)
        raise ModelLoadError(
            f"the calibration prior {path} cannot be read",
            why=why,
            fix=f"refit it with `assistant world calibrate --model {directory}`, or delete it to use the default prior",
        ) from exc


def load_model(
    source: str | Path,
    *,
    device: str | torch.device = "cpu",
    head: HeadConfig | None = None,
    prompt: PromptConfig | None = None,
    allow_random: bool = False,
    base_spec: str | None = None,
) -> LoadedModel:
    """Load an MKT checkpoint directory, or build a zero-shot model from a backbone spec.

    An MKT checkpoint keeps the calibrator recorded in its sidecar. A backbone spec
    (``ViT-B-16:laion2b_s34b_b88k``, ``local-dir:DIR``, a plain model directory, ``hf:DIR``) gives
    an untrained MKT model: the untuned prompt, no seen labels, and a calibration prior. The
    prior is the model directory's ``calibration.json`` when it has one (a global-only
    :meth:`~assistant.calibration.Calibrator.fit_prior` fitted on the backbone's own scores, e.g.
    by ``assistant world calibrate`` for ``assets/world-tiny``), else
    :meth:`~assistant.calibration.Calibrator.default`, which assumes CLIP ViT-B cosine scores. A
    prior is fitted with the default ``head`` and ``prompt``, the configuration served.

    Args:
        source: A checkpoint directory or a backbone spec.
        device: Where to put the model.
        head, prompt: Configurations of a model built from a backbone spec (defaults when None);
            a checkpoint uses its own.
        allow_random: Allow a bare architecture name (random weights: tests, pretraining).
        base_spec: For a delta checkpoint, build its base from this spec (see
            :func:`load_checkpoint`).

    Returns:
        The model (eval mode) with its calibrator.

    Raises:
        CheckpointError: A damaged or mismatched checkpoint.
        ModelLoadError: Weights that cannot be loaded, or an unreadable ``calibration.json``.
        ConfigError: A malformed spec.
    """
    if is_checkpoint(source):
        return load_checkpoint(Path(source), device=device, base_spec=base_spec)
    spec = BackboneSpec.parse(str(source))
    backbone = create_backbone(spec, device=device, allow_random=allow_random)
    # Only local model directories can carry a prior; a hub tag's weights keep the default.
    prior = read_prior(spec.name) if spec.backbone_kind.directory else None
    calibrator = prior if prior is not None else Calibrator.default()
    model = MKTModel(backbone, head or HeadConfig(), prompt or PromptConfig())
    return LoadedModel(model.to(resolve_device(device)).eval(), calibrator, None, None)
