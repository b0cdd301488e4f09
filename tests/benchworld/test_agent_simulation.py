"""The agent's simulation (benchworld/simulation/agent.py) on a tiny model and a few world images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.agent_policy import PolicyConfig
from assistant.config import Stage1Config, Stage2Config
from assistant.errors import ConfigError
from assistant.rounds import RoundConfig
from benchworld.simulation.agent import AgentSimConfig, plot_agent_simulation, simulate_agent
from benchworld.simulation.serving import ServingConfig
from benchworld.world.config import world_config
from preannotation import EditCosts, GuardConfig

INITIAL = ("red", "green", "blue", "yellow", "grass", "water", "sky", "brick")
FAST = RoundConfig(
    stage1=Stage1Config(epochs=1, batch_size=16, warmup_epochs=0.0, augment=False, distill_weight=0.1),
    stage2=Stage2Config(epochs=1, batch_size=16),
    min_label_positives=2,
    min_label_negatives=2,
    min_train_images=4,
    min_heldout_images=3,
    eval_batch_size=32,
    tolerance=100.0,  # a random tiny model: promote whenever a round runs (the mechanics are under test)
    edits_tolerance=100.0,
)


def test_the_agent_and_the_fixed_schedule_on_a_tiny_project(tiny_loaded, tmp_path: Path) -> None:
    cfg = AgentSimConfig(
        pool_images=48,
        imports=2,
        budget=36,
        annotations_per_tick=6,
        initial_labels=INITIAL,
        novel_labels=("pink", "snow"),
        novel_at=0.75,  # after the second import: the fixed schedule never pre-annotates them
        policy=PolicyConfig(round_threshold=18, queue_low_water=3, batch_size=8, strategy="uncertainty"),
        round=FAST,
        test_images=40,
        # A random tiny model is unsure of everything: cheap adds (break-even 0.1) make it show tags,
        # and a refit every 6 annotations and a quick guard exercise both.
        serving=ServingConfig(costs=EditCosts(add=9, remove=1), refit_every=6, guard=GuardConfig(min_shown=5)),
        automation_bias=0.3,
        # The mechanics on world v1's single annotator (its automation bias is the one set here;
        # world v2's team has its own rates).
        world=world_config("world-v1"),
    )
    result = simulate_agent(tiny_loaded, cfg)
    agent, fixed = result.agent, result.fixed
    # The same budget, spent by both.
    assert agent.points[-1].annotations == fixed.points[-1].annotations == 36
    assert [p.annotations for p in agent.points[:3]] == [0, 6, 12]
    # The agent: pre-annotation at once, a first batch, rounds at the threshold (18 and 36), the final
    # nightly round (nothing left for it), re-prediction after promotions, a re-score for the novel labels.
    actions = [d["action"] for d in agent.decisions]
    assert actions[:2] == ["preannotate", "select"]
    assert [r["annotations"] for r in agent.rounds] == [18, 36]
    assert all(r["promoted"] for r in agent.rounds)
    assert "rescore" in actions and "repredict" in actions
    refit = [d for d in agent.decisions if d["action"] == "repredict" and "was refit" in d["reason"]]
    assert refit, "the agent re-predicts after a refit of the project's calibration"
    assert all("expected_saving" in d["outcome"] for d in agent.decisions if d["action"] == "repredict")
    rescore = next(d for d in agent.decisions if d["action"] == "rescore")
    assert "added 'pink', 'snow'" in rescore["reason"]
    assert agent.novel_preannotated[0] > 0, "the agent pre-annotates novel tags zero-shot"
    # The fixed schedule: one round, at the end; its novel tags were never pre-annotated.
    assert [r["annotations"] for r in fixed.rounds] == [36]
    assert fixed.novel_preannotated == (0, 0)
    assert fixed.points[-2].version == tiny_loaded.model.version != fixed.points[-1].version
    # Edits against labeling the same tasks from scratch, at every checkpoint.
    for run in (agent, fixed):
        totals = run.effort.totals()
        assert totals.tasks == 36 and run.points[-1].edits == totals.edits and run.points[-1].scratch == totals.scratch
        assert [p.scratch for p in run.points] == sorted(p.scratch for p in run.points)
        assert run.points[-1].errors == sum(run.effort.errors) > 0, "automation bias 0.3 keeps wrong tags"
    # A refit every 6 annotations; a promotion starts the new version's count again.
    assert fixed.refits == 36 // 6 and 3 <= agent.refits <= 36 // 6
    guard = [d for d in agent.decisions if d["action"] == "guard"]
    assert len(guard) == len(agent.guard) and all("'" in d["reason"] for d in guard)
    # The summary, the table, the JSON and the plots.
    summary = result.summary()
    assert set(summary) == {"agent", "fixed"} and summary["agent"]["rounds"] == 2
    s = summary["agent"]
    costs = cfg.serving.costs  # adds weigh 9, removes 1: the ratios are cost-weighted
    assert s["edits_vs_scratch"] == pytest.approx(agent.effort.totals().cost_ratio(costs), abs=1e-3)
    checkpoints = [agent.effort.totals(0, p.annotations).cost_ratio(costs) for p in agent.points if p.annotations]
    assert s["max_checkpoint_vs_scratch"] == pytest.approx(max(c for c in checkpoints if c is not None), abs=1e-3)
    assert s["errors_introduced"] == agent.points[-1].errors
    table = result.table()
    assert "final mAP" in table and "from scratch" in table and "label errors introduced" in table
    doc = json.loads(json.dumps(result.to_json()))
    assert doc["settings"]["budget"] == 36 and len(doc["runs"]["agent"]["decisions"]) == len(agent.decisions)
    assert doc["settings"]["serving"]["break_even"] == pytest.approx(0.1)
    assert doc["runs"]["fixed"]["effort"]["scratch"] == fixed.effort.totals().scratch
    paths = plot_agent_simulation(result, tmp_path)
    assert [p.name for p in paths] == ["agent-vs-fixed.png", "agent-vs-fixed-edits.png", "agent-vs-fixed-effort.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_unusable_settings_are_refused(tiny_loaded) -> None:
    with pytest.raises(ConfigError, match="(?i)invalid agent simulation settings"):
        simulate_agent(tiny_loaded, AgentSimConfig(pool_images=10, budget=20))
    with pytest.raises(ConfigError, match="(?i)unknown labels .*unicorn"):
        simulate_agent(tiny_loaded, AgentSimConfig(novel_labels=("unicorn",)))
