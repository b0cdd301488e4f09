"""Print the project's runtime requirements from pyproject.toml, one per line, for the image builds.

``--without-model`` leaves out what only the model needs (torch and friends): the backend image
(`assistant serve`, `assistant beat`, `assistant status`) never imports them, which
tests/test_compose.py checks, and is ~6 GB smaller for it. pyproject.toml stays the one list of
dependencies.

    python docker/requirements.py                   > requirements.txt   # worker image
    python docker/requirements.py --without-model   > requirements.txt   # backend image
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

# Distributions only the model code (assistant/, the heavy workers modules) imports.
MODEL_ONLY = frozenset({"torch", "torchvision", "open-clip-torch", "transformers", "safetensors", "matplotlib"})


def _name(requirement: str) -> str:
    # PEP 503 normalisation of the distribution name in front of extras and version specifiers.
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"cannot read the distribution name of {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(pyproject: Path, *, without_model: bool = False) -> list[str]:
    """The ``[project].dependencies`` of ``pyproject``, without the model-only ones if asked."""
    deps: list[str] = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    return [d for d in deps if not (without_model and _name(d) in MODEL_ONLY)]


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parents[1] / "pyproject.toml")
    parser.add_argument("--without-model", action="store_true", help="leave out torch, open_clip and friends")
    args = parser.parse_args(argv)
    sys.stdout.write("".join(f"{line}\n" for line in requirements(args.pyproject, without_model=args.without_model)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
