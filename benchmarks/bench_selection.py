"""Speed and peak memory of active-learning selection over a pool of 1,000,000 cached images.

The workers hand a strategy the pool as chunks of calibrated scores (from the feature cache) and
float16 global embeddings. Measured per strategy, in a fresh process each (so peak memory is its
own), with 2 threads:

- ``reduce``: :class:`assistant.selection.PoolBuilder` folding the score chunks (and, for the
  strategies that need them, the float16 embeddings) into the pool;
- ``select``: the strategy choosing ``k``;
- peak RSS of the process (``resource.getrusage``), and the pool's own arrays.

Targets (issue #8): uncertainty and entropy under 5 s, hybrid under 60 s, memory bounded. The
baseline of the same run is the naive uncertainty: the whole ``N x C`` score matrix held in
float32 and reduced in one numpy expression (what the chunked reduction avoids).

Generating the synthetic chunks is not timed. Run:
``.venv/bin/python benchmarks/bench_selection.py`` (``--quick`` for 200,000 images).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

STRATEGIES = ("uncertainty", "entropy", "novelty", "random", "hybrid", "diversity")
TARGETS = {"uncertainty": 5.0, "entropy": 5.0, "hybrid": 60.0}
CHUNK = 65_536


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _one(strategy: str, n: int, labels: int, dim: int, labeled: int, k: int, seed: int) -> dict[str, float]:
    """Run one strategy in this process and return its figures."""
    import numpy as np
    import torch

    from assistant.selection import PoolBuilder, create_strategy

    torch.set_num_threads(2)
    rss_start = _rss_mb()
    rng = np.random.default_rng(seed)
    names = [f"label {i}" for i in range(labels)]
    thresholds = rng.uniform(0.2, 0.6, labels)
    chooser = create_strategy(strategy, seed=seed)
    keep = chooser.needs_embeddings
    builder = PoolBuilder(n, names, thresholds, novel_labels=names[:3], dim=dim if keep else None)
    reduce_s = 0.0
    for start in range(0, n, CHUNK):
        rows = np.arange(start, min(n, start + CHUNK))
        # Skewed scores, as a tagger's are: most labels sure absences, a few near their thresholds.
        probs = rng.random((rows.size, labels), dtype=np.float32) ** 4
        emb = rng.standard_normal((rows.size, dim), dtype=np.float32).astype(np.float16) if keep else None
        started = time.perf_counter()
        builder.add(rows, probs, emb)
        reduce_s += time.perf_counter() - started
    labeled_emb = rng.standard_normal((labeled, dim)).astype(np.float16) if keep else None
    started = time.perf_counter()
    pool = builder.build(labeled_emb)
    chosen = chooser.select(pool, k)
    select_s = time.perf_counter() - started
    assert len(chosen) == k
    return {
        "reduce_s": reduce_s,
        "select_s": select_s,
        "total_s": reduce_s + select_s,
        "pool_mb": pool.nbytes() / 2**20,
        "peak_rss_mb": _rss_mb(),
        "rss_after_imports_mb": rss_start,
    }


def _naive(n: int, labels: int, seed: int) -> dict[str, float]:
    """The baseline: the whole score matrix in float32, reduced at once."""
    import numpy as np

    from assistant.selection import image_uncertainty

    rng = np.random.default_rng(seed)
    probs = np.empty((n, labels), dtype=np.float32)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        probs[start:stop] = rng.random((stop - start, labels), dtype=np.float32) ** 4
    thresholds = rng.uniform(0.2, 0.6, labels)
    started = time.perf_counter()
    u = image_uncertainty(probs, thresholds)
    top = np.argpartition(-u, 100)[:100]
    seconds = time.perf_counter() - started
    assert top.size == 100
    return {"total_s": seconds, "peak_rss_mb": _rss_mb(), "matrix_mb": probs.nbytes / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--labels", type=int, default=100, help="vocabulary size")
    parser.add_argument("--dim", type=int, default=512, help="embedding width (ViT-B: 512)")
    parser.add_argument("--labeled", type=int, default=1000, help="labeled images (diversity starts from them)")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="200,000 images")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one strategy, print JSON
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.images = 200_000
    if args.one:
        figures = (
            _naive(args.images, args.labels, args.seed)
            if args.one == "naive"
            else _one(args.one, args.images, args.labels, args.dim, args.labeled, args.k, args.seed)
        )
        print(json.dumps(figures))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    common = ["--images", str(args.images), "--labels", str(args.labels), "--dim", str(args.dim)]
    common += ["--labeled", str(args.labeled), "--k", str(args.k), "--seed", str(args.seed)]
    results: dict[str, dict[str, float]] = {}
    for name in ["naive", *args.strategies.split(",")]:
        out = subprocess.run(
            [sys.executable, __file__, "--one", name, *common], env=env, capture_output=True, text=True, check=True
        )
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    load = os.getloadavg()
    table = Table(
        title=f"Selection over {args.images:,} cached images, {args.labels} labels, D={args.dim}, "
        f"{args.labeled:,} labeled, k={args.k}, 2 threads (load average {load[0]:.1f})"
    )
    for column in ("strategy", "reduce s", "select s", "total s", "target s", "pool MB", "peak RSS MB"):
        table.add_column(column, justify="right")
    naive = results.pop("naive")
    for name, r in results.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else (" ok" if r["total_s"] < target else " MISSED")
        table.add_row(
            name,
            f"{r['reduce_s']:.2f}",
            f"{r['select_s']:.2f}",
            f"{r['total_s']:.2f}",
            f"{target:g}{verdict}" if target else "-",
            f"{r['pool_mb']:.0f}",
            f"{r['peak_rss_mb']:.0f}",
        )
    console.print(table)
    u = results.get("uncertainty")
    if u is not None:
        console.print(
            f"Baseline (whole {naive['matrix_mb']:.0f} MB score matrix in memory, one numpy pass): uncertainty in "
            f"{naive['total_s']:.2f} s at {naive['peak_rss_mb']:.0f} MB peak; chunked: {u['total_s']:.2f} s "
            f"({u['total_s'] / naive['total_s']:.2f}x the time) at {u['peak_rss_mb']:.0f} MB "
            f"({u['peak_rss_mb'] / naive['peak_rss_mb']:.2f}x the memory).",
            highlight=False,
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"settings": vars(args), "load_average": load, "naive": naive, "strategies": results}, fh, indent=1
            )


if __name__ == "__main__":
    main()
