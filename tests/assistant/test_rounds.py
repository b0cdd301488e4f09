"""The round core: target rule, split, label choice, decision, a whole tiny round, its report and checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from assistant.calibration import Calibrator
from assistant.checkpoint import load_checkpoint
from assistant.config import Stage1Config, Stage2Config
from assistant.corrections import AnnotatedImage, assign_split, correction_targets
from assistant.data import ArrayImageDataset
from assistant.errors import ConfigError
from assistant.labels import LabelSet
from assistant.round_eval import Evaluation, cross_fitted_probabilities, decide, heldout_effort
from assistant.round_report import write_round_report
from assistant.rounds import (
    InsufficientDataError,
    RoundConfig,
    RoundData,
    RoundSplit,
    choose_training_labels,
    run_round,
)
from preannotation import EditCosts
from tests.helpers import colour_world

LABELS = LabelSet(tuple(f"tag{c}" for c in range(6)))
FAST = RoundConfig(
    stage1=Stage1Config(epochs=2, batch_size=16, warmup_epochs=0.0, augment=False, distill_weight=0.1),
    stage2=Stage2Config(epochs=2, batch_size=16, lr=5e-3),
    min_label_positives=2,
    min_label_negatives=2,
    min_train_images=4,
    min_heldout_images=4,
    min_val_images=4,
    eval_batch_size=32,
)


def _split(images: np.ndarray, targets: np.ndarray, prefix: str) -> RoundSplit:
    return RoundSplit(ArrayImageDataset(images, targets), tuple(f"{prefix}{i}" for i in range(len(images))))


def _round_data(n_train: int = 32, n_val: int = 8, n_heldout: int = 16) -> RoundData:
    images, targets = colour_world(n_train + n_val + n_heldout, len(LABELS), seed=3)
    a, b = n_train, n_train + n_val
    return RoundData(
        LABELS,
        train=_split(images[:a], targets[:a], "t"),
        val=_split(images[a:b], targets[a:b], "v"),
        heldout=_split(images[b:], targets[b:], "h"),
    )


def _evaluation(map_value: float | None, edits: float | None = None) -> Evaluation:
    metrics = {} if map_value is None else {"mAP": map_value}
    if edits is not None:  # held-out tasks of 5 true tags each
        metrics.update(edits_vs_scratch=edits, edits_per_task=5 * edits, scratch_per_task=5.0)
    return Evaluation("v", metrics, {}, np.zeros((1, 1)), np.zeros((1, 1)))


def test_the_target_rule_positives_hard_negatives_shown_and_unknown() -> None:
    labels = LabelSet(("cat", "dog", "snow", "zebra"))
    image = AnnotatedImage(
        key="1",
        positives=frozenset({"cat"}),
        hard_negatives=frozenset({"dog"}),
        # "zebra" was added to the config after this annotation: the annotator never saw it.
        shown=frozenset({"cat", "dog", "snow"}),
    )
    edited = AnnotatedImage(key="2", positives=frozenset({"dog"}), hard_negatives=frozenset({"dog"}))
    targets = correction_targets(labels, [image, edited])
    assert targets.tolist() == [[1, -1, -1, 0], [0, 1, 0, 0]]


def test_the_split_is_deterministic_stable_as_the_project_grows_and_near_its_fractions() -> None:
    keys = [str(i) for i in range(4000)]
    first = assign_split(keys[:1000], salt="project-3", heldout_fraction=0.2, val_fraction=0.1)
    later = assign_split(keys, salt="project-3", heldout_fraction=0.2, val_fraction=0.1)
    assert later[:1000] == first  # an image never changes side
    share = {name: later.count(name) / len(keys) for name in ("train", "val", "heldout")}
    assert share["heldout"] == pytest.approx(0.2, abs=0.03) and share["val"] == pytest.approx(0.1, abs=0.03)
    other = assign_split(keys, salt="project-4", heldout_fraction=0.2, val_fraction=0.1)
    assert other != later  # projects split independently
    with pytest.raises(ConfigError, match="(?i)fractions"):
        assign_split(keys, salt="p", heldout_fraction=0.7, val_fraction=0.4)


def test_novel_labels_join_training_only_with_enough_annotations() -> None:
    labels = LabelSet(("seen_a", "seen_b", "novel_rich", "novel_poor"))
    targets = np.array(
        [[1, 0, 1, 1], [-1, 0, 1, -1], [1, 0, -1, -1], [-1, 0, -1, -1], [1, 0, 1, -1], [1, 0, -1, -1]], dtype=np.int8
    )
    cfg = RoundConfig(min_label_positives=3, min_label_negatives=3)
    chosen = choose_training_labels(labels, targets, {"seen_a", "seen_b"}, cfg)
    # seen_b has no known answer in training; novel_poor has 1 positive of the 3 needed.
    assert chosen.names == ("seen_a", "novel_rich")


def test_promotion_allows_the_tolerance_and_no_more() -> None:
    assert decide(_evaluation(50.0), _evaluation(49.6), tolerance=0.5).promote
    assert decide(_evaluation(50.0), _evaluation(52.0), tolerance=0.0).promote
    worse = decide(_evaluation(50.0), _evaluation(49.4), tolerance=0.5)
    assert not worse.promote and worse.delta == pytest.approx(-0.6) and "tolerance" in worse.reason
    assert not decide(_evaluation(None), _evaluation(60.0), tolerance=0.5).promote


def test_a_candidate_that_costs_annotators_more_edits_is_refused_even_when_its_map_rises() -> None:
    costlier = decide(_evaluation(50.0, edits=0.80), _evaluation(53.0, edits=0.85), tolerance=0.5)
    assert not costlier.promote and costlier.edits_delta == pytest.approx(0.05)
    assert "would cost annotators more edits" in costlier.reason and "4.25 vs 4.00 per task" in costlier.reason
    within = decide(_evaluation(50.0, edits=0.80), _evaluation(53.0, edits=0.85), tolerance=0.5, edits_tolerance=0.05)
    assert within.promote and "0.85x vs 0.80x from scratch" in within.reason
    cheaper = decide(_evaluation(50.0, edits=0.90), _evaluation(49.8, edits=0.80), tolerance=0.5)
    assert cheaper.promote and cheaper.edits_delta == pytest.approx(-0.10)
    # A worse ranking is refused whatever the edits; no held-out true tag leaves the mAP to decide.
    assert not decide(_evaluation(50.0, edits=0.9), _evaluation(45.0, edits=0.5), tolerance=0.5).promote
    assert decide(_evaluation(50.0), _evaluation(51.0), tolerance=0.5).promote
    with pytest.raises(ConfigError, match="edits tolerance"):
        RoundConfig(edits_tolerance=-0.1)


def test_heldout_effort_counts_what_the_rule_would_show_against_the_answers() -> None:
    probabilities = np.array([[0.9, 0.6, 0.2, 0.7], [0.4, 0.55, 0.8, 0.1]])
    targets = np.array([[1, -1, 1, 0], [1, 1, -1, -1]], dtype=np.int8)
    effort = heldout_effort(probabilities, targets)
    # Row 0: 'tag0' kept, 'tag1' removed, 'tag2' added, 'tag3' unknown (shown, but neither kept nor removed).
    # Row 1: 'tag1' kept, 'tag2' removed, 'tag0' added.
    assert (effort.kept, effort.removed, effort.added, effort.scratch) == (2, 2, 2, 4)
    capped = heldout_effort(probabilities, targets, max_tags=1)
    assert (capped.kept, capped.removed, capped.added) == (1, 1, 3)
    cheap_adds = heldout_effort(probabilities, targets, EditCosts(add=3, remove=1))  # break-even 0.25
    assert (cheap_adds.kept, cheap_adds.removed, cheap_adds.added) == (3, 2, 1)


def test_cross_fitting_never_scores_a_row_with_a_calibrator_fitted_on_it() -> None:
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(40, 3))
    targets = np.where(raw + 0.3 * rng.normal(size=raw.shape) > 0, 1, -1).astype(np.int8)
    probs = cross_fitted_probabilities(raw, targets, ["a", "b", "c"], fallback=Calibrator.default())
    odd = Calibrator.fit(raw[0::2], targets[0::2], ["a", "b", "c"])  # fold 0 is scored by the odd... rows' fit
    np.testing.assert_allclose(probs[1::2], odd.apply(raw[1::2], ["a", "b", "c"]), rtol=1e-9)
    # Too little data in a fold: the fallback scores it.
    few = cross_fitted_probabilities(raw[:4], targets[:4], ["a", "b", "c"], fallback=Calibrator.default())
    np.testing.assert_allclose(few, Calibrator.default().apply(raw[:4], ["a", "b", "c"]), rtol=1e-9)


def test_a_round_trains_a_copy_on_the_training_split_only_and_compares_on_held_out(tiny_loaded, monkeypatch):
    import assistant.rounds as rounds

    data = _round_data()
    parent_state = {k: v.clone() for k, v in tiny_loaded.model.state_dict().items()}
    trained_on: list[int] = []
    real_stage1 = rounds.train_stage1

    def spy(model, view, labels, cfg, **kwargs):
        trained_on.append(len(view))
        return real_stage1(model, view, labels, cfg, **kwargs)

    monkeypatch.setattr(rounds, "train_stage1", spy)
    phases: set[str] = set()
    outcome = run_round(tiny_loaded, data, FAST, progress=lambda phase, done, total: phases.add(phase))

    assert trained_on == [len(data.train)]  # never the held-out or validation images
    assert phases == {"stage1", "stage2", "evaluate"}
    for key, value in tiny_loaded.model.state_dict().items():
        assert torch.equal(value, parent_state[key]), f"the parent's {key} changed"
    # The random tiny parent had no seen label: every trained label is newly seen and novel here.
    assert set(outcome.candidate.newly_seen) == set(outcome.candidate.trained_labels) == set(LABELS)
    assert set(outcome.candidate.loaded.model.seen_labels) == set(LABELS)
    assert outcome.current.metrics["labels_evaluated"] == outcome.evaluated.metrics["labels_evaluated"] > 0
    assert "mAP_novel" in outcome.current.metrics and "mAP_seen" not in outcome.current.metrics
    assert outcome.evaluated.raw_scores.shape == (len(data.heldout), len(LABELS))
    # Both models' edits under the pre-annotation rule, on the same held-out answers.
    scratch = outcome.current.metrics["scratch_per_task"]
    assert scratch == pytest.approx(outcome.evaluated.metrics["scratch_per_task"]) and scratch > 0
    assert outcome.decision.edits_delta == pytest.approx(
        outcome.evaluated.metrics["edits_vs_scratch"] - outcome.current.metrics["edits_vs_scratch"]
    )
    assert outcome.decision.promote == (
        outcome.decision.delta >= -FAST.tolerance and outcome.decision.edits_delta <= FAST.edits_tolerance
    )
    assert outcome.candidate.loaded.calibrator.method == "platt"  # fitted on the held-out split


def test_stage2_alone_keeps_the_image_tower_and_uses_the_feature_function(tiny_loaded):
    data = _round_data()
    calls: list[tuple[str, ...]] = []

    def features(model, dataset, items):
        from assistant.train import encode_dataset

        calls.append(tuple(items))
        return encode_dataset(model, dataset)

    cfg = RoundConfig(**{**FAST.__dict__, "stages": ("stage2",)})
    outcome = run_round(tiny_loaded, data, cfg, features_fn=features)
    assert calls == [data.train.items]
    assert outcome.candidate.loaded.model.image_tower_version() == tiny_loaded.model.image_tower_version()
    assert all(name.startswith("prompt_learner.") for name in outcome.candidate.tuned_parameters)


def test_too_few_annotations_skip_the_round_before_training(tiny_loaded):
    data = _round_data(n_heldout=2)
    with pytest.raises(InsufficientDataError, match="(?i)held-out"):
        run_round(tiny_loaded, data, FAST)
    data = _round_data(n_train=2, n_val=0)
    with pytest.raises(InsufficientDataError, match="(?i)training"):
        run_round(tiny_loaded, data, FAST)


def test_the_candidate_checkpoint_records_its_lineage_and_the_report_is_complete(tiny_loaded, tmp_path: Path):
    outcome = run_round(tiny_loaded, _round_data(), FAST)
    sidecar = outcome.save_candidate(
        tmp_path / "ckpt", version="mkt-p3-r001", round_id="r001", parent_version="base-1", extra={"project": 3}
    )
    assert outcome.candidate.loaded.model.version == "mkt-p3-r001"
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.sidecar is not None and loaded.sidecar.parent_version == "base-1"
    assert loaded.sidecar.round_id == "r001" and loaded.sidecar.data_manifest_hash == outcome.manifest_hash
    assert loaded.sidecar.metrics["mAP"] == pytest.approx(outcome.evaluated.metrics["mAP"])
    assert set(loaded.model.seen_labels) == set(LABELS) and sidecar.extra["project"] == 3

    report = write_round_report(outcome, tmp_path / "reports" / "r001", title="Round r001", context={"project": 3})
    text = report.read_text()
    assert "Held-out metrics" in text and "per_label_ap.png" in text and "Decision" in text
    for name in ("per_label_ap.png", "pr_curves.png", "round.json"):
        assert (report.parent / name).stat().st_size > 0
    assert "| edits_vs_scratch |" in text and "break-even 0.50" in text
    summary = json.loads((report.parent / "round.json").read_text())
    assert summary["decision"]["promote"] == outcome.decision.promote
    assert summary["decision"]["delta_edits_vs_scratch"] == pytest.approx(outcome.decision.edits_delta)
    assert summary["preannotation"]["costs"] == {"add": 1.0, "remove": 1.0}
    # Writing again replaces the folder whole, and leaves no temporary folder behind.
    write_round_report(outcome, report.parent, title="again")
    assert "# again" in report.read_text()
    assert [p.name for p in report.parent.parent.iterdir()] == ["r001"]


@pytest.mark.parametrize(("n", "val_used"), [(0, False), (40, False), (200, True)])
def test_split_annotations_trains_on_a_validation_split_too_small_to_select_on(n: int, val_used: bool) -> None:
    from assistant.data import ArrayImageDataset
    from assistant.labels import LabelSet
    from assistant.rounds import split_annotations

    annotations = [
        AnnotatedImage(key=str(i), positives=frozenset({"a"} if i % 2 else {"b"}), shown=frozenset({"a", "b"}))
        for i in range(n)
    ]
    pixels = np.arange(max(n, 1) * 8 * 8 * 3, dtype=np.int64).reshape(-1, 8, 8, 3).astype(np.uint8)
    images = pixels[np.array([int(a.key) for a in annotations], dtype=np.int64)]
    data = split_annotations(
        annotations,
        LabelSet(("a", "b")),
        lambda rows, targets: ArrayImageDataset(images[rows], targets),
        salt="project-1",
        heldout_fraction=0.2,
        val_fraction=0.1,
        min_val_images=8,
    )
    sides = assign_split([a.key for a in annotations], salt="project-1", heldout_fraction=0.2, val_fraction=0.1)
    assert len(data.heldout) == sides.count("heldout")  # the held-out side is the hash's, always
    assert len(data.train) + len(data.heldout) + (len(data.val) if data.val else 0) == n
    if val_used:
        assert data.val is not None and len(data.val) == sides.count("val") >= 8
    else:
        assert data.val is None and len(data.train) == sides.count("train") + sides.count("val")
    # Every split's targets are the rule's rows: image i chose "a" when i is odd.
    for split in (data.train, data.heldout):
        for item, row in zip(split.items, split.targets, strict=True):
            assert row.tolist() == ([1, -1] if int(item) % 2 else [-1, 1])
