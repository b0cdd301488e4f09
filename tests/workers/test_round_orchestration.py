"""A project's round end to end without services: a fake Label Studio, in-memory locks, the real registry and ledger."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from state.contracts import RoundRequest, RoundResult
from state.ledger import LedgerEvent, open_ledger
from state.registry import Registry
from state.round_log import read_round_log
from tests.helpers import colour_world
from workers.rounds import RoundPaths, round_config, run_project_round

LABELS = [f"tag{c}" for c in range(6)]
CONFIG = (
    '<View><Image name="image" value="$image"/><Choices name="tags" toName="image" choice="multiple">'
    + "".join(f'<Choice value="{n}"/>' for n in LABELS)
    + "</Choices></View>"
)


class FakeSource:
    """Label Studio as a round sees it: a config, an export and the predictions."""

    def __init__(self, tasks: list[dict[str, Any]], predictions: dict[int, dict[str, Any]]) -> None:
        self.tasks, self.preds, self.exports = tasks, predictions, 0

    def label_config(self, project: int) -> str:
        return CONFIG

    def export(self, project: int) -> list[dict[str, Any]]:
        self.exports += 1
        return self.tasks

    def predictions(self, project: int) -> list[dict[str, Any]]:
        return list(self.preds.values())


class MemoryLocks:
    """The RoundLocks operations a round uses, in memory."""

    def __init__(self) -> None:
        self.held: dict[int, str] = {}
        self.lock = threading.Lock()

    def claim(self, project: int, holder: str, ttl_s: float) -> str | None:
        with self.lock:
            current = self.held.setdefault(project, holder)
            return None if current == holder else current

    def renew(self, project: int, holder: str, ttl_s: float) -> bool:
        return self.held.get(project) == holder

    def release(self, project: int, holder: str) -> bool:
        with self.lock:
            if self.held.get(project) != holder:
                return False
            del self.held[project]
            return True


def _project(tmp_path: Path, n: int) -> FakeSource:
    images, targets = colour_world(n, len(LABELS), seed=5)
    tasks, preds = [], {}
    for i in range(n):
        path = tmp_path / "ls-images" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(path)
        chosen = [LABELS[c] for c in range(len(LABELS)) if targets[i, c] > 0]
        item = {"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": chosen}}
        wrong = {"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": ["tag0", "tag1"]}}
        preds[1000 + i] = {"id": 1000 + i, "result": [wrong]}
        annotation = {
            "id": 500 + i,
            "result": [item],
            "parent_prediction": 1000 + i,
            "updated_at": "2026-01-01T00:00:00Z",
        }
        tasks.append({"id": i + 1, "data": {"image": str(path)}, "annotations": [annotation]})
    return FakeSource(tasks, preds)


@pytest.fixture
def round_settings(settings, tmp_path: Path):
    return settings.model_copy(
        update={
            "media_local_roots": [tmp_path / "ls-images"],
            "round_stage1_epochs": 2,
            "round_stage2_epochs": 1,
            "round_batch_size": 16,
            "round_min_label_positives": 2,
            "round_min_label_negatives": 2,
            "round_min_train_images": 4,
            "round_min_heldout_images": 4,
            "round_heldout_fraction": 0.3,
        }
    )


def _run(settings, source, locks=None, **request: Any) -> RoundResult:
    return run_project_round(
        settings,
        RoundRequest(project=3, **request),
        holder="test-holder",
        locks=locks or MemoryLocks(),
        source=source,
    )


def test_a_round_registers_a_candidate_with_lineage_reports_and_records_it(round_settings, tmp_path: Path) -> None:
    ledger = open_ledger(None, home=round_settings.home)
    ledger.append([LedgerEvent.annotation("ANNOTATION_CREATED", project=3, annotation_id=i, task=i) for i in range(7)])
    phases: set[str] = set()
    source = _project(tmp_path, 40)
    result = run_project_round(
        round_settings,
        RoundRequest(project=3, trigger="threshold"),
        holder="h",
        locks=MemoryLocks(),
        source=source,
        progress=lambda phase, done, total: phases.add(phase),
    )
    registry = Registry(round_settings.models_dir, round_settings.base_model)
    assert result.status in ("promoted", "kept") and result.round_id == "r0001"
    assert phases >= {"export", "images", "stage1", "stage2", "evaluate", "save"}
    record = registry.get(result.candidate_version or "")
    assert record.version == "mkt-p3-r0001" and record.parent == "tiny-v1" and record.project == "3"
    assert record.round_id == "r0001" and record.manifest_hash and "mAP" in record.metrics
    assert registry.current(3).version == (record.version if result.promoted else "tiny-v1")
    assert result.counts["new_corrections"] == 7 and result.counts["heldout_images"] >= 4
    report = Path(result.report_path or "")
    assert report.is_file() and (report.parent / "per_label_ap.png").is_file()
    # The effort ledger's section: nothing counted in this project yet, and it says so.
    assert "## Annotators' edits against labeling from scratch" in report.read_text()
    assert (report.parent / "effort.json").is_file()
    assert ledger.last_round(3) is not None and ledger.count_since_last_round(3) == 0
    (entry,) = read_round_log(round_settings.models_dir, 3)
    assert entry["round_id"] == "r0001" and entry["trigger"] == "threshold" and entry["status"] == result.status
    assert not any(RoundPaths(round_settings.models_dir, 3).staging.iterdir())  # nothing left staged
    # The second round is r0002, trained from whatever serves now, and downloads nothing again.
    second = _run(round_settings, source, stages=["stage2"])
    assert second.round_id == "r0002" and second.counts["images_reused"] == 40
    assert registry.get(second.candidate_version or "").parent == result.current_version
    ledger.close()


def test_a_round_held_by_another_holder_answers_busy(round_settings, tmp_path: Path) -> None:
    locks = MemoryLocks()
    locks.claim(3, "someone-else", 60)
    source = _project(tmp_path, 8)
    result = _run(round_settings, source, locks)
    assert result.status == "busy" and "someone-else" in result.reason and source.exports == 0


def test_too_few_annotations_skip_the_round_but_record_it(round_settings, tmp_path: Path) -> None:
    result = _run(round_settings, _project(tmp_path, 6))
    assert result.status == "skipped" and not result.promoted and result.candidate_version is None
    assert "annotate more" in result.reason.lower()
    assert Registry(round_settings.models_dir, round_settings.base_model).list_versions() == []
    assert read_round_log(round_settings.models_dir, 3)[0]["status"] == "skipped"


def test_a_crash_mid_round_leaves_the_version_in_service_and_the_next_round_starts_clean(
    round_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.rounds as rounds

    locks = MemoryLocks()
    paths = RoundPaths(round_settings.models_dir, 3)
    left_over = paths.staging / "r0001-deadbeef"
    left_over.mkdir(parents=True)
    (left_over / "model.safetensors").write_bytes(b"half")
    (paths.reports / ".tmp-r0001.x").mkdir(parents=True)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt("killed mid-training")

    monkeypatch.setattr(rounds, "run_round", boom)
    with pytest.raises(KeyboardInterrupt):
        _run(round_settings, _project(tmp_path, 40), locks)
    registry = Registry(round_settings.models_dir, round_settings.base_model)
    assert registry.current(3).version == "tiny-v1" and registry.list_versions() == []
    assert locks.held == {}  # released on the way out (a SIGKILL lets it expire instead)
    assert not left_over.exists() and not list(paths.reports.glob(".tmp-*"))  # a dead round's leftovers
    monkeypatch.undo()
    result = _run(round_settings, _project(tmp_path, 40), locks)
    assert result.round_id == "r0001" and result.candidate_version == "mkt-p3-r0001"


def test_a_failed_round_is_recorded_with_its_reason_and_keeps_the_corrections_new(
    round_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16 (6b): a round that raises is in the round log (reason, when, version tried), then raises."""
    import workers.rounds as rounds
    from assistant.errors import ConfigError

    ledger = open_ledger(None, home=round_settings.home)
    ledger.append([LedgerEvent.annotation("ANNOTATION_CREATED", project=3, annotation_id=i, task=i) for i in range(3)])
    ledger.close()

    def reject(*args: Any, **kwargs: Any) -> Any:
        raise ConfigError("the trainer rejects the labels", why="'dog ' has a trailing space", fix="rename it")

    monkeypatch.setattr(rounds, "run_round", reject)
    locks = MemoryLocks()
    with pytest.raises(ConfigError):
        _run(round_settings, _project(tmp_path, 40), locks, trigger="start_training")
    (entry,) = read_round_log(round_settings.models_dir, 3)
    assert entry["status"] == "failed" and entry["round_id"] == "r0001" and entry["trigger"] == "start_training"
    assert entry["reason"].startswith("The trainer rejects the labels. 'dog ' has a trailing space. Fix:")
    assert entry["attempted_version"] == "mkt-p3-r0001" and entry["candidate_version"] is None
    assert entry["current_version"] == "tiny-v1" and entry["finished_at"] >= entry["started_at"]
    assert locks.held == {}
    ledger = open_ledger(None, home=round_settings.home)
    assert ledger.count_since_last_round(3) == 3  # the failed round used none of them
    ledger.close()

    # Any error, not only the project's own: its type names it.
    monkeypatch.setattr(rounds, "run_round", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        _run(round_settings, _project(tmp_path, 40), locks)
    last = read_round_log(round_settings.models_dir, 3)[-1]
    assert last["round_id"] == "r0002" and last["reason"] == "ZeroDivisionError: division by zero"


def test_no_promote_only_evaluates(round_settings, tmp_path: Path) -> None:
    result = _run(round_settings, _project(tmp_path, 40), promote=False)
    assert not result.promoted and result.status == "kept" and result.current_version == "tiny-v1"
    summary = json.loads((Path(result.report_path or "").parent / "round.json").read_text())
    assert summary["context"]["model in service after"] == "tiny-v1"


def test_the_round_config_follows_the_settings(round_settings) -> None:
    update = {"round_tolerance": 1.5, "round_edits_tolerance": 0.25, "round_max_steps": 7}
    cfg = round_config(round_settings.model_copy(update=update), ["stage2"])
    assert cfg.stages == ("stage2",) and cfg.tolerance == 1.5 and cfg.stage2.max_steps == 7
    assert cfg.edits_tolerance == pytest.approx(0.25)
    assert round_config(round_settings).edits_tolerance == 0.0
    assert round_config(round_settings).stages == ("stage1", "stage2")


def test_the_round_config_counts_edits_under_the_projects_costs(round_settings) -> None:
    settings = round_settings.model_copy(
        update={"edit_cost_add": 1.0, "edit_cost_remove": 3.0, "project_edit_costs": {3: {"add": 3, "remove": 1}}}
    )
    assert round_config(settings, project=3).costs.break_even == pytest.approx(0.25)  # the project's entry
    assert round_config(settings, project=4).costs.break_even == pytest.approx(0.75)  # the settings' costs
    assert round_config(settings).costs.break_even == pytest.approx(0.75)


def test_a_live_round_gates_promotion_on_the_projects_edit_costs(round_settings, tmp_path: Path) -> None:
    settings = round_settings.model_copy(update={"project_edit_costs": {3: {"add": 3, "remove": 1}}})
    result = _run(settings, _project(tmp_path, 40), promote=False)
    summary = json.loads((Path(result.report_path or "").parent / "round.json").read_text())
    assert summary["preannotation"]["costs"] == {"add": 3.0, "remove": 1.0}
    assert "break-even 0.25" in Path(result.report_path or "").read_text()


@pytest.mark.parametrize(("val_fraction", "val_used"), [(0.1, False), (0.5, True)])
def test_a_validation_split_too_small_to_select_on_is_trained_on(
    round_settings, val_fraction: float, val_used: bool
) -> None:
    from assistant.corrections import AnnotatedImage, assign_split
    from assistant.labels import LabelSet
    from workers.rounds import _round_data

    settings = round_settings.model_copy(update={"round_val_fraction": val_fraction})
    annotations = [
        AnnotatedImage(key=str(i), positives=frozenset({"tag0"}), shown=frozenset(LABELS)) for i in range(40)
    ]
    paths = {a.key: Path(f"/images/{a.key}.png") for a in annotations}
    data = _round_data(annotations, paths, LabelSet(tuple(LABELS)), settings, 3, min_val_images=8)
    sides = assign_split(
        [a.key for a in annotations], salt="project-3", heldout_fraction=0.3, val_fraction=val_fraction
    )
    # The held-out side is the hash's, always; validation images are kept apart only when they can select.
    assert len(data.heldout) == sides.count("heldout") >= 4
    if val_used:
        assert data.val is not None and len(data.val) == sides.count("val") >= 8
        assert len(data.train) == sides.count("train")
    else:
        assert 0 < sides.count("val") < 8 and data.val is None
        assert len(data.train) == sides.count("train") + sides.count("val")
