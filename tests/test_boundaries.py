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
        "workers.contracts",
        "preannotation",
        "studio",
        "studio.config",
        "studio.client",
        "studio.protocol",
    ],
)
def test_light_modules_never_load_the_model(module):
    loaded = _modules_after_import(module)
    for heavy in ("torch", "open_clip", "assistant", "transformers", "celery"):
        assert heavy not in loaded, f"importing {module} loaded {heavy}"


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
