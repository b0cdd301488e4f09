"""The checks of `assistant doctor`, in the order it runs them; each says what it found and the fix.

A check returns a :class:`~cli.doctor_result.Check` with a status:

- ``ok``: works;
- ``warn``: works, but not as a user would want (the offline demo model, a worker on other
  settings, an image downloaded instead of read from disk);
- ``fail``: broken; ``assistant doctor`` exits 1;
- ``skip``: could not be checked because an earlier check failed, or needs ``--project``.

Every check talks to the real thing (Redis, the workers, Label Studio, the registry) with short
timeouts, so the whole run takes a few seconds; nothing here imports torch.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from cli.doctor_result import Check
from state.redact import redact_url
from studio.tokens import token_kind

if TYPE_CHECKING:
    from celery import Celery

    from backends.settings import BackendSettings
    from studio.client import LabelStudioClient
    from studio.controls import ProjectVocabulary

__all__ = ["Doctor"]


class Doctor:
    """Runs the checks in order and keeps what later ones need.

    Args:
        settings: The settings it read (the first check reports them).
        project: The Label Studio project to check (config, webhook, an image), or None.
        timeout: Seconds for Redis, the workers' answers and each Label Studio call.
        image_timeout: Seconds a worker gets to read one image.
    """

    def __init__(
        self, settings: BackendSettings, project: int | None, *, timeout: float = 3.0, image_timeout: float = 60.0
    ) -> None:
        self.settings = settings
        self.project = project
        self.timeout = timeout
        self.image_timeout = image_timeout
        self.checks: list[Check] = []
        self.redis_ok = False
        self.workers: dict[str, list[str]] = {}
        self.client: LabelStudioClient | None = None
        self.vocab: ProjectVocabulary | None = None
        self._app: Celery | None = None

    # --- running ----------------------------------------------------------------------------------
    def run(self) -> list[Check]:
        """Every check, in order."""
        steps: list[Callable[[], Check]] = [
            self.check_settings,
            self.check_redis,
            self.check_workers,
            self.check_label_studio,
            self.check_config,
            self.check_webhook,
            self.check_image,
            self.check_registry,
            self.check_base_model,
            self.check_calibration,
        ]
        try:
            for step in steps:
                self.checks.append(step())
        finally:
            if self._app is not None:
                self._app.close()
        return self.checks

    @property
    def app(self) -> Celery:
        """A Celery app that only sends (no task imports)."""
        if self._app is None:
            from workers.celery_app import make_celery

            self._app = make_celery(self.settings, include=())
        return self._app

    def _needs_project(self, name: str, title: str) -> Check | None:
        if self.project is None:
            return Check(name, title, "skip", "needs a project: `assistant doctor --project ID`")
        if self.client is None:
            return Check(name, title, "skip", "Label Studio cannot be asked (see above)")
        return None

    # --- the checks -------------------------------------------------------------------------------
    def check_settings(self) -> Check:
        """What was read, and from where."""
        s = self.settings
        source = f"env file {s.env_file}" if s.env_file is not None else "the environment only (no .env here)"
        detail = (
            f"read {source}: home {s.home}, broker {redact_url(s.broker_url)}, Label Studio {s.label_studio_url}, "
            f"backend port {s.port}, base model {s.base_model}"
        )
        data = {
            "env_file": None if s.env_file is None else str(s.env_file),
            "home": str(s.home),
            "broker": redact_url(s.broker_url),
            "label_studio_url": s.label_studio_url,
            "port": s.port,
            "base_model": s.base_model,
        }
        return Check("settings", "settings", "ok", detail, data=data)

    def check_redis(self) -> Check:
        """The broker's Redis answers."""
        from state.metrics import broker_redis

        client = broker_redis(self.settings.broker_url, timeout_s=self.timeout)
        if client is None:
            return Check("redis", "Redis", "skip", f"the broker {redact_url(self.settings.broker_url)} is not Redis")
        try:
            client.ping()
        except Exception as exc:  # redis.RedisError and socket errors alike
            return Check(
                "redis",
                "Redis",
                "fail",
                f"Redis does not answer at {redact_url(self.settings.broker_url)} ({type(exc).__name__}: {exc})",
                fix="start Redis (`make stack` starts one; or `redis-server`), or point ASSISTANT_BROKER_URL at yours",
            )
        finally:
            client.close()
        self.redis_ok = True
        return Check("redis", "Redis", "ok", f"answers at {redact_url(self.settings.broker_url)}")

    def check_workers(self) -> Check:
        """Workers online per queue, and the model settings each was started with."""
        if not self.redis_ok:
            return Check("workers", "workers", "skip", "Redis is down: no worker can be asked")
        from state.registry import Registry
        from workers.control import worker_info

        queues = self.app.control.inspect(timeout=self.timeout).active_queues() or {}
        infos = worker_info(self.app, timeout=self.timeout)
        per_queue: dict[str, list[str]] = {self.settings.predict_queue: [], self.settings.train_queue: []}
        for name, consumed in sorted(queues.items()):
            for queue in consumed or []:
                per_queue.setdefault(str(queue.get("name")), []).append(name)
        self.workers = per_queue
        data: dict[str, Any] = {"queues": per_queue, "workers": infos}
        predict, train = per_queue[self.settings.predict_queue], per_queue[self.settings.train_queue]
        if not predict:
            return Check(
                "workers",
                "workers",
                "fail",
                f"no worker consumes the {self.settings.predict_queue} queue: nothing is predicted"
                + (f" (online: {', '.join(sorted(queues))})" if queues else " (none answered)"),
                fix="start one with `assistant worker` (`make stack` does), from the directory holding your .env",
                data=data,
            )
        ours = Registry(self.settings.models_dir, self.settings.base_model)
        try:
            our_version: str | None = ours.base_version()
        except Exception:
            our_version = None
        lines, odd = [], []
        for name in sorted(set(predict) | set(train)):
            info = infos.get(name)
            if info is None:
                lines.append(f"{name} (did not say what it serves: an older worker)")
                continue
            model = f"base model {info.get('base_version')}" + (" (offline demo)" if info.get("demo_model") else "")
            lines.append(f"{name}: {model}, registry {info.get('models_dir')}")
            if info.get("models_dir") != str(self.settings.models_dir) or info.get("base_version") != our_version:
                odd.append(name)
        detail = (
            f"{self.settings.predict_queue}: {', '.join(predict)}; "
            f"{self.settings.train_queue}: {', '.join(train) or 'none'}. " + "; ".join(lines)
        )
        if odd:
            return Check(
                "workers",
                "workers",
                "warn",
                detail + f". {', '.join(odd)} run with other settings than this shell "
                f"(base model {our_version}, registry {self.settings.models_dir})",
                fix="start every worker, the backend and the CLI with the same .env (ASSISTANT_HOME, "
                "ASSISTANT_BASE_MODEL), or they serve and train different models",
                data=data,
            )
        if not train:
            return Check(
                "workers",
                "workers",
                "warn",
                detail,
                fix=f"no worker consumes the {self.settings.train_queue} queue, so rounds never run: "
                "start one with `assistant worker` (both queues by default)",
                data=data,
            )
        return Check("workers", "workers", "ok", detail, data=data)

    def check_label_studio(self) -> Check:
        """Label Studio answers, and the API key is accepted (a legacy token or a personal access token)."""
        from studio.client import LabelStudioClient

        url = self.settings.label_studio_url.rstrip("/")
        try:
            health = httpx.get(f"{url}/health", timeout=self.timeout)
        except httpx.HTTPError as exc:
            return Check(
                "label_studio",
                "Label Studio",
                "fail",
                f"Label Studio does not answer at {url} ({type(exc).__name__})",
                fix="start it (`make stack` does), or set ASSISTANT_LABEL_STUDIO_URL to the URL the workers and the "
                "backend reach it at",
            )
        if health.status_code != 200:
            return Check(
                "label_studio",
                "Label Studio",
                "fail",
                f"{url}/health answered {health.status_code}: not a Label Studio, or not ready",
                fix="check ASSISTANT_LABEL_STUDIO_URL",
            )
        key = self.settings.label_studio_api_key.get_secret_value()
        if not key:
            return Check(
                "label_studio",
                "Label Studio",
                "fail",
                f"Label Studio answers at {url}, but no API key is set",
                fix="set ASSISTANT_LABEL_STUDIO_API_KEY to a token (Account & Settings in Label Studio)",
            )
        kind = token_kind(key)
        try:
            client = LabelStudioClient(url, key, timeout=self.timeout, max_retries=0)
            user = client.sdk.users.whoami()
            version = getattr(client.sdk.versions.get(), "release", None)
        except Exception as exc:  # the SDK's ApiError (401, 403), StudioError, transport errors
            status = getattr(exc, "status_code", None)
            fix = (
                "a legacy token works only when Label Studio runs with LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true; "
                "or copy a personal access token from Account & Settings into ASSISTANT_LABEL_STUDIO_API_KEY"
                if kind == "a legacy token"
                else "the personal access token is revoked or from another Label Studio: create a new one under "
                "Account & Settings and set ASSISTANT_LABEL_STUDIO_API_KEY"
            )
            return Check(
                "label_studio",
                "Label Studio",
                "fail",
                f"Label Studio at {url} refused the API key ({kind}): answered {status or type(exc).__name__}",
                fix=fix,
            )
        self.client = client
        who = getattr(user, "email", None) or getattr(user, "username", None) or "?"
        return Check(
            "label_studio",
            "Label Studio",
            "ok",
            f"Label Studio {version or '?'} at {url}; the key ({kind}) is accepted for {who}",
            data={"url": url, "version": version, "token": kind},
        )

    def check_config(self) -> Check:
        """The project's labeling config has an image-tagging control the model can serve."""
        skipped = self._needs_project("config", "labeling config")
        if skipped is not None:
            return skipped
        assert self.client is not None and self.project is not None  # _needs_project checked
        from cli.doctor_project import check_config

        check, self.vocab = check_config(self.client, self.project)
        return check

    def check_webhook(self) -> Check:
        """The model is connected to the project, and Label Studio sends it the annotations."""
        skipped = self._needs_project("webhook", "model and webhook")
        if skipped is not None:
            return skipped
        assert self.client is not None and self.project is not None
        from cli.doctor_project import check_webhook

        return check_webhook(self.client, self.project)

    def check_image(self) -> Check:
        """A worker reads one of the project's images (as a prediction would)."""
        title = "an image, as a worker reads it"
        skipped = self._needs_project("image", title)
        if skipped is not None:
            return skipped
        if self.vocab is None:
            return Check("image", title, "skip", "the labeling config is not usable")
        if not self.workers.get(self.settings.predict_queue):
            return Check("image", title, "skip", "no worker to ask")
        assert self.client is not None and self.project is not None
        from cli.doctor_project import check_image

        return check_image(self.client, self.project, self.vocab, self.app, timeout=self.image_timeout)

    def check_registry(self) -> Check:
        """The model registry's directory can be written (rounds register and promote there)."""
        models = self.settings.models_dir
        try:
            models.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=models, prefix=".doctor-"):
                pass
        except OSError as exc:
            return Check(
                "registry",
                "model registry",
                "fail",
                f"cannot write in {models}: {exc}",
                fix="make ASSISTANT_HOME a directory this user can write (the registry is <home>/models)",
            )
        return Check("registry", "model registry", "ok", f"{models} is writable")

    def check_base_model(self) -> Check:
        """The model serving the project (or every new project): a real one, or the offline demo model."""
        from state.model_info import DEMO_MODEL_FIX, DEMO_MODEL_WHAT, served_model
        from state.registry import Registry

        registry = Registry(self.settings.models_dir, self.settings.base_model)
        whom = f"project {self.project}" if self.project is not None else "new projects"
        try:
            served = served_model(registry, self.project)
        except Exception as exc:  # RegistryError: a broken sidecar or pointer
            return Check("base_model", "model", "fail", f"cannot tell which model serves {whom}: {exc}")
        data = served.to_json() | {"base_model": self.settings.base_model}
        if served.demo:
            return Check(
                "base_model",
                "model",
                "warn",
                f"{whom}: {served.version} is {DEMO_MODEL_WHAT}",
                fix=DEMO_MODEL_FIX,
                data=data,
            )
        what = "the base model" if served.is_base else "a fine-tuned version"
        return Check("base_model", "model", "ok", f"{whom}: {served.version} ({what})", data=data)

    def check_calibration(self) -> Check:
        """How the served model's scores are turned into tags: never measured, a prior, or fitted here."""
        from state.model_info import served_model
        from state.registry import Registry

        registry = Registry(self.settings.models_dir, self.settings.base_model)
        try:
            served = served_model(registry, self.project)
        except Exception as exc:
            return Check("calibration", "calibration", "skip", f"the registry cannot be read: {exc}")
        return Check(
            "calibration",
            "calibration",
            "ok",
            f"{served.calibration}: {served.calibration_note}",
            data={"state": served.calibration},
        )
