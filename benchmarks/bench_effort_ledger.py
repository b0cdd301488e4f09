"""Reads of the effort ledger on a big project: what ``assistant status`` and a dashboard pay.

Fills a SQLite effort ledger with ``--annotations`` counted annotations (100,000 by default, 20
tags, two model versions, ~4 tag answers each), then times, against a baseline measured in the
same run on the same database:

- **status totals** (per tag and per model version, :meth:`EffortStore.tag_totals` and
  :meth:`EffortStore.versions`: kept up to date in ``effort_totals`` / ``effort_versions``)
  against the same figures aggregated from the per-tag rows (``GROUP BY`` over ``effort_answers``);
- **a dashboard page** (the last 1,000 rows, keyset: ``seq > last``, as :meth:`EffortStore.page`
  pages) against the same page by ``OFFSET`` (both raw SQL, so only the paging differs).

Run: ``.venv/bin/python benchmarks/bench_effort_ledger.py`` (``--annotations 20000`` for a short
run). Timings are medians of repeated reads; the machine's other load makes them noisy.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

from preannotation import EditCosts
from state.effort_records import CountedAnnotation, TagAnswer
from state.ledger import open_ledger

console = Console()
TAGS = [f"tag{i:02d}" for i in range(20)]


def _time(fn: Callable[[], object], repeats: int = 7) -> float:
    """Median seconds of one call over ``repeats`` (after a warm-up call)."""
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeats + 1)[1:])


def _annotation(i: int, half: int) -> CountedAnnotation:
    shown = {TAGS[i % 20], TAGS[(i + 3) % 20]}
    final = {TAGS[i % 20], TAGS[(i + 7) % 20]}
    answers = tuple(TagAnswer(t, t in shown, t in final, False, 0.6, 0.6) for t in sorted(shown | final))
    version = "mkt-a+11111111" if i < half else "mkt-b+22222222"
    return CountedAnnotation(i + 1, i + 1, i + 1, i + 1, "parent", version, "platt", None, answers, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=int, default=100_000)
    args = parser.parse_args()
    n = args.annotations
    with tempfile.TemporaryDirectory() as home:
        ledger = open_ledger(None, home=Path(home))
        store = ledger.effort
        batch: list[CountedAnnotation] = []
        for i in track(range(n), description=f"counting {n:,} annotations"):
            batch.append(_annotation(i, n // 2))
            if len(batch) == 5000 or i == n - 1:
                store.record(3, through=i + 1, counted=batch, costs=EditCosts())
                batch = []
        conn = ledger._store  # the same connection: the baseline reads the same pages of the same file

        def totals() -> object:
            return store.tag_totals(3), store.versions(3)

        def aggregated() -> object:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT tag, SUM(shown * present), SUM(shown * (1 - present)), SUM((1 - shown) * present) "
                    "FROM assistant_effort_answers WHERE project = 3 GROUP BY tag"
                )
                tags = cur.fetchall()
                cur.execute(
                    "SELECT model_version, COUNT(*), SUM(kept), SUM(removed), SUM(added), SUM(costlier) "
                    "FROM assistant_effort WHERE project = 3 GROUP BY model_version"
                )
                return tags, cur.fetchall()

        last = store.page(3, after=0, limit=1)[0].seq + n - 1001

        def keyset() -> object:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT * FROM assistant_effort WHERE project = 3 AND seq > ? ORDER BY seq LIMIT 1000", (last,)
                )
                return cur.fetchall()

        def offset() -> object:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT * FROM assistant_effort WHERE project = 3 ORDER BY seq LIMIT 1000 OFFSET ?", (n - 1000,)
                )
                return cur.fetchall()

        rows = [("status totals", _time(totals), _time(aggregated)), ("dashboard page", _time(keyset), _time(offset))]
        ledger.close()
    table = Table("read", "effort ledger (ms)", "baseline (ms)", "ratio", title=f"{n:,} counted annotations")
    for name, ours, base in rows:
        table.add_row(name, f"{ours * 1000:.2f}", f"{base * 1000:.2f}", f"{ours / base:.4f}x")
    console.print(table)
    console.print("baselines: status totals aggregated from the per-tag rows; the page read by OFFSET")


if __name__ == "__main__":
    main()
