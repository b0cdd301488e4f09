"""Settings from an env file: ``.env`` in the working directory or ``ASSISTANT_ENV_FILE``, for every settings class."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from agent.settings import AgentSettings
from backends.settings import BackendSettings
from state.settings import Settings, env_file_path
from tests.conftest import REPO_ROOT
from tests.integration.processes import assistant

ENV = """# the README's kind of file
ASSISTANT_HOME={home}
ASSISTANT_BROKER_URL=redis://127.0.0.1:6399/3
LABEL_STUDIO_URL=http://ls.test:8181
ASSISTANT_LABEL_STUDIO_API_KEY=from-the-file
ASSISTANT_PORT=9191
ASSISTANT_MEDIA_ALLOWED_HOSTS=
LS_PORT=8181
"""


@pytest.fixture
def env_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / ".env").write_text(ENV.format(home=tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASSISTANT_ENV_FILE")
    for name in ("ASSISTANT_HOME", "ASSISTANT_BROKER_URL", "ASSISTANT_PORT", "LABEL_STUDIO_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ASSISTANT_LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("ASSISTANT_LABEL_STUDIO_API_KEY", raising=False)
    return tmp_path


@pytest.mark.parametrize("cls", [Settings, BackendSettings, AgentSettings])
def test_every_settings_class_reads_dot_env_in_the_working_directory(env_dir: Path, cls: type[Settings]) -> None:
    settings = cls()

    assert settings.env_file == env_dir / ".env"
    assert settings.home == env_dir / "home"
    assert settings.broker_url == "redis://127.0.0.1:6399/3"
    assert settings.label_studio_url == "http://ls.test:8181"  # the unprefixed alias works in the file too
    assert settings.label_studio_api_key.get_secret_value() == "from-the-file"
    assert settings.media_allowed_hosts == []  # an empty line keeps the default (as compose writes it)
    if isinstance(settings, BackendSettings):
        assert settings.port == 9191


def test_the_environment_wins_over_the_file(env_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_HOME", str(env_dir / "elsewhere"))

    settings = BackendSettings()

    assert settings.home == env_dir / "elsewhere"
    assert settings.port == 9191  # the rest still comes from the file


def test_assistant_env_file_names_another_file_and_dev_null_reads_none(
    env_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path_factory.mktemp("other") / "stack.env"
    other.write_text("ASSISTANT_PORT=9292\n")
    monkeypatch.setenv("ASSISTANT_ENV_FILE", str(other))
    assert BackendSettings().port == 9292 and BackendSettings().env_file == other

    monkeypatch.setenv("ASSISTANT_ENV_FILE", os.devnull)
    settings = BackendSettings()
    assert settings.port == 9090 and settings.home != env_dir / "home"


def test_a_missing_named_env_file_is_an_error_that_says_what_to_do(
    env_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSISTANT_ENV_FILE", str(env_dir / "nope.env"))

    with pytest.raises(ValueError, match="does not exist. Fix: point it at your env file"):
        BackendSettings()


def test_without_a_file_nothing_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASSISTANT_ENV_FILE")

    assert env_file_path() is None
    assert Settings().env_file is None


def test_status_in_another_shell_uses_the_same_stack(env_dir: Path) -> None:
    # The trap: a second shell without the exports silently used Redis db 0 and ./var.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSISTANT_", "LABEL_STUDIO_"))}
    env |= {"PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"}
    done = subprocess.run(
        assistant("status", "--json", "--timeout", "0.2"), cwd=env_dir, env=env, capture_output=True, text=True
    )

    report = json.loads(done.stdout)
    assert report["env_file"] == str(env_dir / ".env")
    assert report["home"] == str(env_dir / "home")
    assert report["broker"] == "redis://127.0.0.1:6399/3"
    assert report["label_studio_url"] == "http://ls.test:8181"


def test_the_compose_env_file_serves_the_processes_outside_docker_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # One .env for both: docker compose substitutes it into compose.yaml, `assistant` reads it.
    monkeypatch.setenv("ASSISTANT_ENV_FILE", str(REPO_ROOT / "docker" / "env.example"))

    settings = AgentSettings()

    assert settings.base_model == "ViT-B-16:laion2b_s34b_b88k"
    assert settings.media_allowed_hosts == [] and settings.round_threshold == 50
    assert settings.basic_auth_enabled is False  # the example's empty pair reads as unset
