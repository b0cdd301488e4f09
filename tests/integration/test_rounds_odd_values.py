"""End to end: a round trains on a real Label Studio project whose config has odd values (issue 16, 6a).

The fault: a config with ``<Choice value="dog "/>`` got predictions, but every training round
failed with "label names must not have leading or trailing spaces", because the rounds parsed
the config with rules of their own. This test builds such a project on a real Label Studio
(the harness's ``ls_server``): values with surrounding spaces, a slash, non-ASCII text, a nested
``Taxonomy`` whose nodes carry spaces, and controls the model ignores (``TextArea``, ``Rating``).
Annotations go in through Label Studio's API, with the values exactly as the config writes them.
Then ``assistant round run`` (a subprocess, against that Label Studio, with real Redis locks and
a tiny random checkpoint) must train and evaluate a candidate, and the model it trained must know
the labels ``/setup`` serves for that config.

Redis DB 11 with a key prefix of its own (only those keys are deleted afterwards).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from state.registry import Registry
from studio.config import parse_label_config
from tests.helpers import colour_world, save_pngs
from tests.integration.ls_harness import LSClient, LSServer
from tests.integration.ls_stack_env import SMALL_ROUNDS, ls_stack_env
from tests.integration.processes import assistant
from tests.integration.redis_namespace import RedisNamespace
from tests.workers._helpers import save_tiny_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_URL = "redis://127.0.0.1:6379/11"
BASE_VERSION = "odd-tiny-v1"
# One value per stripe colour of the synthetic images, written the way users do.
VALUES = ["red ", " green", "blue / sky", "Streifen ä"]
CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<Choices name="tags" toName="image" choice="multiple">'
    + "".join(f'<Choice value="{v}"/>' for v in VALUES)
    + "</Choices>"
    '<Taxonomy name="kind" toName="image">'
    '<Choice value=" Colour "><Choice value="warm "/><Choice value=" cold"/></Choice>'
    "</Taxonomy>"
    '<TextArea name="note" toName="image"/>'
    '<Rating name="quality" toName="image" maxRating="5"/>'
    "</View>"
)
N_TASKS = 24
ROUND_TIMEOUT_S = 600.0


def _result(targets: list[int], index: int) -> list[dict[str, object]]:
    """What the editor stores for an image whose stripes are ``targets``: the values verbatim."""
    chosen = [VALUES[c] for c, on in enumerate(targets) if on > 0]
    result: list[dict[str, object]] = [
        {"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": chosen}},
        {"from_name": "note", "to_name": "image", "type": "textarea", "value": {"text": [f"image {index} "]}},
        {"from_name": "quality", "to_name": "image", "type": "rating", "value": {"rating": 1 + index % 5}},
    ]
    node = [" Colour ", "warm "] if targets[0] > 0 else [" Colour ", " cold"]
    result.append({"from_name": "kind", "to_name": "image", "type": "taxonomy", "value": {"taxonomy": [node]}})
    return result


def test_a_round_trains_on_a_project_whose_values_have_surrounding_spaces(
    ls_server: LSServer, ls_client: LSClient, tmp_path: Path
) -> None:
    namespace = RedisNamespace(REDIS_URL, "rounds-odd")  # skips when Redis is down
    try:
        base = save_tiny_checkpoint(tmp_path / "base-model", BASE_VERSION)
        pixels, targets = colour_world(N_TASKS, len(VALUES), seed=11, size=64)
        images = save_pngs(pixels, tmp_path / "images", "odd")
        env = ls_stack_env(tmp_path, base, namespace, ls_server, **SMALL_ROUNDS)

        project = ls_client.create_project(CONFIG)
        tasks = ls_client.upload_images(project, images)
        for i, task in enumerate(tasks):
            ls_client.create_annotation(task, _result(targets[i].tolist(), i))
        # What /setup and /predict serve for the config Label Studio stored.
        served = parse_label_config(ls_client.sdk.projects.get(id=project).label_config).labels
        assert served == ("red", "green", "blue / sky", "Streifen ä", "Colour", "warm", "cold")

        run = subprocess.run(
            assistant("round", "run", "--project", str(project)),
            env=env,
            capture_output=True,
            text=True,
            timeout=ROUND_TIMEOUT_S,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        status = subprocess.run(
            assistant("round", "status", "--project", str(project), "--json"),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 0, status.stdout[-2000:] + status.stderr[-2000:]
        (entry,) = json.loads(status.stdout)
        (done,) = entry["rounds"]
        # The round trained and evaluated a candidate (whether it is promoted is the gate's call on
        # a random tiny model, not this test's subject).
        assert done["status"] in ("promoted", "kept"), done
        assert done["counts"]["skipped_unannotated_or_cancelled"] == 0 and done["counts"]["images_failed"] == 0

        # The model the round trained knows the served labels, spelled as served.
        record = Registry(tmp_path / "home" / "models", str(base)).get(done["candidate_version"])
        assert record.version != BASE_VERSION and record.project == str(project)
        sidecar = json.loads((Path(record.checkpoint) / "sidecar.json").read_text())
        trained = set(sidecar["seen_labels"])
        assert trained and trained <= set(served)
        assert {"red", "green"} <= trained
    finally:
        namespace.close()
