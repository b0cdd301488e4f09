"""Offline simulation of a labeling project on the benchmark world (no Label Studio, no workers).

A simulated annotator corrects the model's pre-annotations from the world's ground truth, round
after round, and :func:`assistant.rounds.run_round` fine-tunes and promotes exactly as the
production rounds do. The selector hook (:data:`Selector`) is where active-learning strategies
plug in; the state it sees (:class:`SimulationState`) is what an agent would see.

- :mod:`~benchworld.simulation.annotator`: world images with complete labels; the annotator.
- :mod:`~benchworld.simulation.loop`: the round loop, its table and its plots.
- :mod:`~benchworld.simulation.serving`: pre-annotation decided as the product decides, and the
  edits it costs against labeling from scratch.
"""

from __future__ import annotations

from benchworld.simulation.annotator import LabeledImages, SimulatedAnnotator, render_labeled
from benchworld.simulation.loop import (
    RoundObserver,
    RoundRow,
    Selector,
    SimulationConfig,
    SimulationProgress,
    SimulationResult,
    SimulationState,
    next_unlabeled,
    plot_simulation,
    plot_simulation_effort,
    simulate_rounds,
)

__all__ = [
    "LabeledImages",
    "RoundObserver",
    "RoundRow",
    "Selector",
    "SimulatedAnnotator",
    "SimulationConfig",
    "SimulationProgress",
    "SimulationResult",
    "SimulationState",
    "next_unlabeled",
    "plot_simulation",
    "plot_simulation_effort",
    "render_labeled",
    "simulate_rounds",
]
