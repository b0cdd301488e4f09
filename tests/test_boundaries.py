"""Import direction, proven at run time (import-linter checks it statically in `make test`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def _modules_after_import(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "module",
    [
        "backends",
        "backends.convert",
        "state.contracts",
        "preannotation",
        "studio",
        "studio.config",
        "studio.controls",
        "studio.client",
        "studio.protocol",
    ],
)
def test_light_modules_never_load_the_model(module):
    loaded = _modules_after_import(module)
    for heavy in ("torch", "open_clip", "assistant", "transformers", "celery"):
        assert heavy not in loaded, f"importing {module} loaded {heavy}"


def test_state_and_errors_load_neither_the_model_nor_the_worker():
    # Every module of the durable state at once (one interpreter: the suite runs on small machines).
    modules = sorted(f"state.{p.stem}" for p in (REPO_ROOT / "state").glob("*.py") if p.stem != "__init__")
    assert "state.ledger" in modules and "state.decision_log" in modules
    loaded = _modules_after_import(", ".join(["errors", *modules]))
    for heavy in ("torch", "open_clip", "transformers", "workers", "backends", "agent", "cli"):
        assert heavy not in loaded, f"importing the state package loaded {heavy}"
    # The error base is a leaf: alone it loads nothing of the project.
    alone = _modules_after_import("errors")
    assert not {"assistant", "state", "workers", "backends", "preannotation"} & alone


def test_light_core_modules_do_not_load_torch():
    loaded = _modules_after_import("assistant.errors")
    assert "torch" not in loaded


def test_lint_imports_contracts_hold():
    lint = REPO_ROOT / ".venv" / "bin" / "lint-imports"
    if not lint.exists():
        pytest.skip("lint-imports is not installed in .venv (run `make install`)")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_api_is_pinned():
    import assistant

    assert assistant.__all__ == sorted(assistant.__all__, key=str.lower) or len(assistant.__all__) > 0
    for name in assistant.__all__:
        assert getattr(assistant, name) is not None
    with pytest.raises(AttributeError):
        assistant.not_a_name  # noqa: B018
