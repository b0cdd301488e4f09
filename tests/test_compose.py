"""compose.yaml, the Dockerfile and docker/env.example against the code that runs in them.

No Docker engine runs here, so the file is validated against the Compose Specification's JSON
schema (check-jsonschema) and read the way compose reads it: YAML with anchors and merge keys,
then ``${VAR}`` interpolation from the .env file. The settings every process needs are derived
from the pydantic settings classes themselves (fields, aliases, defaults, validators), so adding a
setting the deployment must provide makes these tests fail until compose.yaml provides it.
"""

from __future__ import annotations

import copy
import pkgutil
import re
import shutil
import subprocess
import sys
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices, SecretStr, ValidationError
from pydantic_settings import BaseSettings

from agent.settings import AgentSettings
from backends.settings import BackendSettings
from state.settings import PLACEHOLDER_SECRETS, Settings
from tests.conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
ENV_EXAMPLE = REPO_ROOT / "docker" / "env.example"
README = REPO_ROOT / "README.md"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME, and $$ (a literal $).
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY", re.IGNORECASE)


class MissingVariable(Exception):
    """A ``${NAME:?message}`` whose variable is unset or empty: compose refuses to start."""


# --- reading compose.yaml as compose does --------------------------------------------------------------
def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable interpolation of one string."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3)
        value = env.get(name)
        # With a colon, empty counts as unset.
        missing = value is None or (bool(operator) and operator.startswith(":") and value == "")
        if operator and operator.endswith("?") and missing:
            raise MissingVariable(f"{name}: {argument}")
        if operator and operator.endswith("-") and missing:
            return argument
        return value or ""

    return _VARIABLE.sub(substitute, text)


def _walk(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_walk(v, env) for v in node]
    if isinstance(node, dict):
        return {k: _walk(v, env) for k, v in node.items()}
    return node


def raw_compose() -> dict[str, Any]:
    """compose.yaml with anchors and merge keys resolved, variables not yet interpolated."""
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return doc


def env_example() -> dict[str, str]:
    """docker/env.example as a mapping (the documented variables, required ones blank)."""
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def filled_env(**overrides: str) -> dict[str, str]:
    """env.example with every required (blank) value set to a plausible, non-placeholder secret."""
    required = {name for name, op in variables(raw_compose()) if op == ":?"}
    env = {
        k: v or (f"test-{k.lower().replace('_', '-')}-x7Qp2" if k in required else "") for k, v in env_example().items()
    }
    env["LABEL_STUDIO_USERNAME"] = "admin@example.com"
    env.update(overrides)
    return env


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml as compose runs it with ``env`` as the .env file."""
    return dict(_walk(copy.deepcopy(raw_compose()), filled_env() if env is None else env))


def variables(node: Any) -> Iterator[tuple[str, str | None]]:
    """``(name, operator)`` of every variable reference in the raw file."""
    if isinstance(node, str):
        for m in _VARIABLE.finditer(node):
            if m.group(0) != "$$":
                yield m.group(1) or m.group(4), m.group(2)
    elif isinstance(node, list):
        for v in node:
            yield from variables(v)
    elif isinstance(node, dict):
        for v in node.values():
            yield from variables(v)


def _command(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


# The settings class each `assistant` command group reads (the rest read state.settings.Settings).
_SETTINGS_OF_COMMAND: dict[str, type[Settings]] = {"serve": BackendSettings, "agent": AgentSettings}


def assistant_services(doc: Mapping[str, Any]) -> dict[str, type[Settings]]:
    """Services that run our code, with the settings class their command reads."""
    found: dict[str, type[Settings]] = {}
    for name, service in doc["services"].items():
        command = _command(service)
        if command[:1] == ["assistant"]:
            found[name] = _SETTINGS_OF_COMMAND.get(command[1], Settings)
    return found


def mounts(service: Mapping[str, Any]) -> list[tuple[str, PurePosixPath, bool]]:
    """``(source, target, read_only)`` of a service's volumes (short syntax)."""
    found = []
    for spec in service.get("volumes") or []:
        source, target, *mode = str(spec).split(":")
        found.append((source, PurePosixPath(target), bool(mode) and "ro" in mode[0].split(",")))
    return found


def _is_named(source: str) -> bool:
    return not source.startswith((".", "/", "~"))


# --- settings as the code declares them -----------------------------------------------------------------
def env_names(cls: type[BaseSettings], field: str) -> list[str]:
    """The environment variables a field is read from, in order of precedence."""
    info = cls.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(c) for c in alias.choices]
    if isinstance(alias, str):
        return [alias]
    prefix = str(cls.model_config.get("env_prefix", ""))
    return [f"{prefix}{field}".upper()]


def is_secret(cls: type[BaseSettings], field: str) -> bool:
    """Whether a field holds a secret (its type is, or contains, SecretStr)."""
    annotation = cls.model_fields[field].annotation
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def settings_from(cls: type[Settings], env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Build ``cls`` exactly as a process does, from an environment holding only ``env``."""
    import os

    for key in list(os.environ):
        if key.startswith(("ASSISTANT_", "LABEL_STUDIO_")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    return cls()


# --- tests ----------------------------------------------------------------------------------------------
def test_compose_file_validates_against_the_compose_specification() -> None:
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")
    if tool is None:
        pytest.skip("check-jsonschema is not installed (it is in the dev extra: make install)")
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_variable_is_documented_and_the_required_ones_are_enforced() -> None:
    documented = env_example()
    refs = list(variables(raw_compose()))
    undocumented = sorted({name for name, _ in refs} - set(documented))
    assert not undocumented, f"add these to docker/env.example: {undocumented}"
    required = {name for name, op in refs if op == ":?"}
    assert {"REDIS_PASSWORD", "POSTGRES_PASSWORD", "LEDGER_DB_PASSWORD", "LABEL_STUDIO_USER_TOKEN"} <= required
    for name in sorted(required):
        assert documented[name] == "", f"{name} must be blank in env.example, so that compose refuses to start"
        env = filled_env()
        env[name] = ""
        with pytest.raises(MissingVariable, match=name):
            compose(env)
    # A secret is never given a default: each one is a required variable, or optional and empty.
    for name, op in refs:
        if _SECRET_NAME.search(name) and op not in (":?", ":-"):
            pytest.fail(f"${{{name}}} has no :? or :- in compose.yaml")
        if _SECRET_NAME.search(name) and op == ":-":
            assert re.search(rf"\$\{{{name}:-\}}", COMPOSE.read_text()), f"{name} must default to empty"


def test_the_services_of_the_stack() -> None:
    services = compose()["services"]
    assert {"label-studio", "postgres", "redis", "backend", "worker-gpu", "worker-cpu", "beat", "flower"} <= set(
        services
    )
    profiles = {name: set(s.get("profiles") or ()) for name, s in services.items()}
    assert profiles["worker-cpu"] == {"cpu"} and "monitoring" in profiles["flower"]
    assert not profiles["worker-gpu"] and not profiles["backend"] and not profiles["beat"]

    ls = services["label-studio"]
    assert ls["image"].startswith("heartexlabs/label-studio:")
    assert ls["environment"]["DJANGO_DB"] == "default" and ls["environment"]["POSTGRE_HOST"] == "postgres"
    # The pitfalls of docs/deploy.md: legacy tokens (else 401) and a backend at a private address (else 403).
    assert ls["environment"]["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert ls["environment"]["ML_BLOCK_LOCAL_IP"] == "false"
    # The webhook to http://backend:9090/webhook (a private address) must pass LS's SSRF protection,
    # which stays on with a list that still bans loopback and the cloud metadata service.
    assert ls["environment"]["SSRF_PROTECTION_ENABLED"] == "true"
    assert ls["environment"]["USE_DEFAULT_BANNED_SUBNETS"] == "false"
    banned = ls["environment"]["USER_ADDITIONAL_BANNED_SUBNETS"].split(",")
    assert {"127.0.0.0/8", "169.254.0.0/16", "::1/128", "fd00:ec2::254/128"} <= set(banned)
    assert not {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} & set(banned)
    assert ls["environment"]["LATEST_VERSION_CHECK"] == "false"

    gpu = services["worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    for name in ("worker-gpu", "worker-cpu"):
        command = _command(services[name])
        assert "--queues=predict,train" in command and "--pool=prefork" in command
    assert "--device=cpu" in _command(services["worker-cpu"]) and "deploy" not in services["worker-cpu"]
    assert _command(services["beat"]) == ["assistant", "beat"]
    # The agent is opt-in (docs/agent.md) and reads its own settings class.
    assert profiles["agent"] == {"agent"} and _command(services["agent"]) == ["assistant", "agent", "run"]
    assert assistant_services(compose())["agent"] is AgentSettings
    assert "celery" in " ".join(_command(services["flower"])) and "flower" in " ".join(_command(services["flower"]))


def test_stateful_services_have_healthchecks_and_dependents_wait_for_them() -> None:
    services = compose()["services"]
    for name, service in services.items():
        stateful = any(_is_named(src) and not ro for src, _, ro in mounts(service))
        if stateful or name in ("backend", "worker-gpu", "worker-cpu"):
            check = service.get("healthcheck") or {}
            assert check.get("test") and not check.get("disable"), f"{name} needs a healthcheck"
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on must name a condition"
        for target, rule in depends.items():
            assert rule.get("condition") == "service_healthy", f"{name} -> {target}"
            assert services[target].get("healthcheck", {}).get("test"), f"{target} has no healthcheck to wait for"
    assert set(services["label-studio"]["depends_on"]) == {"postgres"}
    assert {"redis", "postgres"} <= set(services["backend"]["depends_on"])


def test_named_volumes_hold_the_models_the_feature_cache_and_the_databases(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = compose()
    services, declared = doc["services"], set(doc["volumes"])
    used = {src for s in services.values() for src, _, _ in mounts(s) if _is_named(src)}
    assert used == declared, f"declared but unused: {declared - used}; used but undeclared: {used - declared}"
    for name, source, target in (
        ("postgres", "postgres-data", "/var/lib/postgresql/data"),
        ("redis", "redis-data", "/data"),
        ("label-studio", "label-studio-data", "/label-studio/data"),
    ):
        assert (source, PurePosixPath(target), False) in mounts(services[name])

    for name, cls in assistant_services(doc).items():
        settings = settings_from(cls, services[name]["environment"], monkeypatch)
        targets = {target: src for src, target, ro in mounts(services[name]) if _is_named(src) and not ro}
        if name != "beat":
            # The registry is shared: what a round promotes on a worker, the backend's /setup serves.
            assert targets.get(PurePosixPath(str(settings.models_dir))) == "models", name
        if name.startswith("worker"):
            assert targets.get(PurePosixPath(str(settings.feature_cache_dir))) == "feature-cache", name
            media = settings.label_studio_media_root
            assert media is not None
            ls_data = [t for src, t, ro in mounts(services[name]) if src == "label-studio-data" and ro]
            assert any(PurePosixPath(str(media)).is_relative_to(t) for t in ls_data), f"{name}: media root not mounted"


@pytest.mark.parametrize("service", ["backend", "worker-gpu", "worker-cpu", "beat", "agent"])
def test_assistant_services_get_every_setting_the_code_needs(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    raw, doc = raw_compose(), compose()
    cls = assistant_services(doc)[service]
    env: dict[str, str] = doc["services"][service]["environment"]
    raw_env: dict[str, str] = raw["services"][service]["environment"]

    known = {n for field in cls.model_fields for n in env_names(cls, field)}
    unknown = sorted(k for k in env if k.startswith("ASSISTANT_") and k not in known)
    assert not unknown, f"{service}: no setting reads {unknown}"
    for field, info in cls.model_fields.items():
        if info.is_required():
            assert any(n in env for n in env_names(cls, field)), f"{service}: required setting {field} is missing"

    settings = settings_from(cls, env, monkeypatch)
    assert settings.environment == "production", "placeholder secrets are refused only outside development"
    # Every setting without which the code refuses to start in production comes from a required
    # variable, so a missing value stops `docker compose up` with a message, not a container.
    for field in cls.model_fields:
        names = [n for n in env_names(cls, field) if n in env]
        if not names:
            continue
        try:
            settings_from(cls, {k: v for k, v in env.items() if k not in names}, monkeypatch)
        except ValidationError:
            assert all(":?" in raw_env[n] for n in names), f"{service}: {names} must be ${{VAR:?...}}"
    # Secrets come from variables, never from the file itself.
    for field in cls.model_fields:
        for name in env_names(cls, field):
            if name in raw_env and is_secret(cls, field):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:[?-][^}]*\}", raw_env[name]), f"{service}: {name} is literal"
    for name, value in raw_env.items():
        if value and "://" in value:
            password = urlsplit(value.replace("${", "{")).password
            assert password is None or password.startswith("{"), f"{service}: a password is written in {name}"

    # Inside the stack, services reach each other by name; `localhost` would be the container itself.
    urls = [settings.label_studio_url, settings.broker_url, settings.ledger_url]
    if isinstance(settings, AgentSettings):
        # The decision log lives next to the ledger, never in a SQLite file inside the container.
        urls.append(settings.agent_log_url)
        assert settings.agent_log_url is not None, f"{service}: ASSISTANT_AGENT_LOG_URL is missing"
    for url in urls:
        host = urlsplit(url or "").hostname
        assert host in doc["services"], f"{service}: {url} does not point at a compose service"


def test_placeholder_secrets_are_refused_outside_development(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = compose()["services"]["worker-gpu"]["environment"]
    settings_from(Settings, worker, monkeypatch)  # the real values pass
    for placeholder in sorted(PLACEHOLDER_SECRETS - {""}):
        for variable in ("REDIS_PASSWORD", "LEDGER_DB_PASSWORD", "LABEL_STUDIO_USER_TOKEN"):
            env = compose(filled_env(**{variable: placeholder}))["services"]["worker-gpu"]["environment"]
            with pytest.raises(ValidationError, match="placeholder"):
                settings_from(Settings, env, monkeypatch)
    backend = compose(filled_env(ASSISTANT_WEBHOOK_TOKEN="changeme"))["services"]["backend"]["environment"]
    with pytest.raises(ValidationError, match="ASSISTANT_WEBHOOK_TOKEN is a placeholder"):
        settings_from(BackendSettings, backend, monkeypatch)
    # "test" is not development either; development itself accepts them (local runs, the e2e).
    staging = {**worker, "ASSISTANT_ENVIRONMENT": "test", "ASSISTANT_LABEL_STUDIO_API_KEY": "changeme"}
    with pytest.raises(ValidationError, match="ASSISTANT_ENVIRONMENT=test"):
        settings_from(Settings, staging, monkeypatch)
    local = {**staging, "ASSISTANT_ENVIRONMENT": "development", "ASSISTANT_BROKER_URL": "redis://:changeme@r:6379/0"}
    assert settings_from(Settings, local, monkeypatch).environment == "development"


def _stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = ""
    lines = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ").splitlines()
    for line in lines:
        m = re.match(r"\s*FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            current = m.group(1) or f"stage{len(stages)}"
            stages[current] = []
        elif line.strip() and not line.lstrip().startswith("#") and current:
            stages[current].append(line.strip())
    return stages


def test_the_dockerfile_builds_what_compose_runs_and_bakes_in_no_secret() -> None:
    stages = _stages()
    services = compose()["services"]
    targets = {s["build"]["target"] for s in services.values() if "build" in s}
    assert targets == {"backend", "worker"} and targets <= set(stages)
    images = {name: s["image"] for name, s in services.items() if name in assistant_services(compose())}
    assert images["beat"] == images["backend"] and images["worker-cpu"] == images["worker-gpu"]
    for target in targets:
        users = [line.split()[1] for line in stages[target] if line.upper().startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), f"{target} runs as root"
    for stage, lines in stages.items():
        for line in lines:
            if line.upper().startswith(("ENV ", "ARG ")):
                assert not _SECRET_NAME.search(line), f"{stage}: a secret in `{line}`"
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".env", ".venv", ".venv-ls", "var", ".git"} <= ignored
    # The base image of the workers is NVIDIA's CUDA runtime, the backend's a slim Python.
    text = DOCKERFILE.read_text()
    assert re.search(r"ARG CUDA_IMAGE=nvidia/cuda:[\w.-]+-runtime-", text)
    assert re.search(r"ARG SLIM_IMAGE=python:3\.11-slim", text)


def test_the_backend_image_runs_without_the_model_packages() -> None:
    sys.path.insert(0, str(REPO_ROOT / "docker"))
    try:
        import requirements as reqs  # docker/requirements.py
    finally:
        sys.path.pop(0)
    everything = reqs.requirements(REPO_ROOT / "pyproject.toml")
    light = reqs.requirements(REPO_ROOT / "pyproject.toml", without_model=True)
    names = {reqs._name(r) for r in everything}
    assert reqs.MODEL_ONLY <= names, "docker/requirements.py names a distribution pyproject.toml no longer has"
    assert {reqs._name(r) for r in light} == names - reqs.MODEL_ONLY
    # What the backend image runs: serve (uvicorn + the app), beat, status, preannotate, the agent, the healthcheck.
    modules = [
        "backends.main",
        "cli.main",
        "cli.status",
        "cli.rounds",
        "workers.celery_app",
        "state.schedule",
        "workers.beat",
        "state.registry",
        "state.ledger",
        "state.metrics",
        "state.logs",
        "backends.bulk",
        "backends.dispatch",
        "studio.client",
        "uvicorn",
    ]
    # The agent service runs on the backend image too (`assistant agent run`, `agent health`):
    # every module of the agent package, the CLI group and the pure policy.
    modules += ["cli.agent", "assistant.agent_policy"]
    modules += [f"agent.{m.name}" for m in pkgutil.iter_modules([str(REPO_ROOT / "agent")])]
    assert {"agent.loop", "agent.settings", "agent.execute"} <= set(modules)
    code = (
        "import json, sys\n"
        f"for m in {modules!r}: __import__(m)\n"
        "from backends.main import app_factory\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    loaded = set(yaml.safe_load(out.stdout.strip().splitlines()[-1]))
    import_names = {"torch", "torchvision", "open_clip", "transformers", "safetensors", "matplotlib"}
    assert len(import_names) == len(reqs.MODEL_ONLY)
    assert not loaded & import_names, f"the backend image lacks {sorted(loaded & import_names)}"


def test_the_readmes_local_stack_runs_label_studio_as_the_e2e_harness_does() -> None:
    from tests.integration.ls_harness import ServerConfig, _server_env
    from tests.integration.readme_stack import readme_blocks

    # The README starts the stack with `make stack`: honcho runs the Procfile's four processes.
    (start, second) = readme_blocks()
    assert start.rstrip().splitlines()[-1].startswith("make stack")
    assert "assistant status" in second and "assistant doctor" in second
    procfile = dict(
        line.split(":", 1) for line in (REPO_ROOT / "Procfile").read_text().splitlines() if line and line[0] != "#"
    )
    assert set(procfile) == {"redis", "label-studio", "worker", "backend"}
    assert "assistant worker" in procfile["worker"]
    assert 'assistant serve --port "$BACKEND_PORT"' in procfile["backend"]
    assert all("var/logs/" in (REPO_ROOT / command.split()[0]).read_text() for command in (procfile["redis"],
               procfile["label-studio"]))  # fmt: skip
    assert all(">>var/logs/" in procfile[name] for name in ("worker", "backend"))
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "honcho start --env .env --procfile Procfile" in makefile

    # What the e2e's Label Studio needs to work with a backend, the README's Label Studio gets too:
    # webhooks (SSRF_PROTECTION_ENABLED) included, and a quiet log (LATEST_VERSION_CHECK).
    script = (REPO_ROOT / "stack" / "label-studio").read_text()
    harness = _server_env(ServerConfig(Path("v"), Path("d"), Path("f"), Path("h"), Path("l")))
    for name in (
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN",
        "ML_BLOCK_LOCAL_IP",
        "SSRF_PROTECTION_ENABLED",
        "LOCAL_FILES_SERVING_ENABLED",
        "LATEST_VERSION_CHECK",
        "COLLECT_ANALYTICS",
        "SENTRY_DSN",
        "FRONTEND_SENTRY_DSN",
    ):
        assert re.search(rf"\b{name}={re.escape(harness[name])}(\s|\\)", script), name
        assert f"`{name}" in README.read_text(), f"the README does not explain {name}"
    assert "env -i" in script  # LS reads unprefixed PORT, HOST, USERNAME: nothing of the shell leaks in

    # The e2e's processes get these through the shared harness (tests/integration/ls_stack_env.py);
    # the README's .env gives them to the stack's.
    from types import SimpleNamespace

    from tests.integration.ls_stack_env import ls_stack_env

    env = ls_stack_env(
        Path("root"),
        Path("model"),
        SimpleNamespace(url="redis://r", prefix="p:"),  # type: ignore[arg-type]
        SimpleNamespace(url="http://ls", api_key="k", config=SimpleNamespace(data_dir=Path("ls"))),  # type: ignore[arg-type]
    )
    for variable in (
        "ASSISTANT_HOME",
        "ASSISTANT_BROKER_URL",
        "ASSISTANT_LABEL_STUDIO_URL",
        "ASSISTANT_LABEL_STUDIO_API_KEY",
        "ASSISTANT_LABEL_STUDIO_MEDIA_ROOT",
    ):
        assert f"\n{variable}=" in start and variable in env, variable
    assert "\nASSISTANT_LABEL_STUDIO_LOCAL_FILES_ROOT=$IMAGES\n" in start
    assert 'LOCAL_FILES_DOCUMENT_ROOT="$IMAGES"' in script
