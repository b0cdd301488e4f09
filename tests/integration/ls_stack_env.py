"""The environment of a test stack's assistant processes against a real Label Studio."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tests.integration.processes import assistant_env

if TYPE_CHECKING:
    from tests.integration.ls_harness import LSServer
    from tests.integration.redis_namespace import RedisNamespace

__all__ = ["ls_stack_env"]


def ls_stack_env(
    root: Path, base_model: Path, namespace: RedisNamespace, server: LSServer, **extra: str
) -> dict[str, str]:
    """:func:`~tests.integration.processes.assistant_env` for a stack in ``root`` on ``server``.

    The assistant's home is ``root/home``; broker and keys are the stack's Redis namespace;
    batches of 8. Uploads are read from Label Studio's media directory (a mounted volume in a
    deployment, ``ASSISTANT_LABEL_STUDIO_MEDIA_ROOT`` in the README's stack); local files are
    downloaded through Label Studio. ``extra`` adds or overrides settings (``port="8123"``).
    """
    settings = {"batch_size": "8", "label_studio_media_root": str(server.config.data_dir / "media"), **extra}
    return assistant_env(
        home=root / "home",
        base_model=base_model,
        broker_url=namespace.url,
        prefix=namespace.prefix,
        ls_url=server.url,
        ls_key=server.api_key,
        **settings,
    )
