"""The environment of a test stack's assistant processes against a real Label Studio."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tests.integration.processes import assistant_env

if TYPE_CHECKING:
    from tests.integration.ls_harness import LSServer
    from tests.integration.redis_namespace import RedisNamespace

__all__ = ["SMALL_ROUNDS", "ls_stack_env"]

#: Fine-tuning rounds small enough for a CPU and a project of a few dozen tiny images.
#:
#: Which tasks are held out is a hash of (project id, task id), and the project ids depend on the
#: test order, so the minimums are low enough for (almost) every split to train and compare: over
#: 40,000 random salts, 24 annotated ``colour_world`` images fail a round 0.03-0.1% of the time
#: (too few held-out images, or no label with positives and negatives on both sides), against
#: 1.4-2.4% with 30% held out and minimums of 3 held-out images and 2 positives and negatives.
SMALL_ROUNDS: dict[str, str] = {
    "round_stage1_epochs": "2",
    "round_stage2_epochs": "1",
    "round_batch_size": "8",
    "round_heldout_fraction": "0.4",
    "round_min_train_images": "2",
    "round_min_heldout_images": "2",
    "round_min_label_positives": "1",
    "round_min_label_negatives": "1",
    # A random tiny model says nothing about accuracy or edits: these stacks check the mechanics
    # (the simulations check the decisions), so every candidate is promoted.
    "round_tolerance": "100",
    "round_edits_tolerance": "100",
    "round_lock_heartbeat_s": "3",
}


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
