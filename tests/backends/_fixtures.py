"""Loaders for the label-config and task fixtures under ``tests/fixtures`` (shared by backend tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from label_studio_sdk.label_interface.interface import LabelInterface

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CONFIGS = FIXTURES / "label_configs"
TASKS = FIXTURES / "tasks"


def config(name: str) -> str:
    """The XML of ``label_configs/<name>.xml``."""
    return (CONFIGS / f"{name}.xml").read_text(encoding="utf-8")


def payload(name: str) -> Any:
    """The JSON of ``tasks/<name>.json``."""
    return json.loads((TASKS / f"{name}.json").read_text(encoding="utf-8"))


def prediction_errors(config_xml: str, prediction: dict[str, Any]) -> list[str]:
    """What the SDK's validator finds wrong with a prediction (empty when it is valid)."""
    interface = LabelInterface(config_xml)
    errors: list[str] = interface.validate_prediction(prediction, return_errors=True)  # type: ignore[no-untyped-call]
    return errors
