"""Load on the dashboard at ``/ui``: every page's latency with 1,000 rounds and 100,000 decisions.

The stack is the real backend process (``assistant serve``), the shared Redis at 127.0.0.1:6379
(database 13, a key prefix of its own, deleted afterwards) and project 3 recorded in the real
stores (``tests/dashboard/stack.py``): ``--rounds`` rounds in the round log (every seventh failed),
``--versions`` registered versions, ``--decisions`` decisions in the SQLite decision log (two rows
each) and the effort ledger.

Each page is requested ``--calls`` times, one at a time, with Basic auth, after one warm-up call
(whose time is printed as ``first``); ``GET /health`` (no I/O) is measured the same way in the
same run, as the baseline. Printed per page: first, p50, p95, max, and p95 against the baseline's
p95. Target (issue 18): every page under 300 ms at p95. Exit status 1 when a page misses it or
answers anything but 200.

    nice -n 5 .venv/bin/python benchmarks/bench_dashboard.py             # 1,000 rounds, 100,000 decisions
    nice -n 5 .venv/bin/python benchmarks/bench_dashboard.py --quick     # 100 rounds, 10,000 decisions
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.dashboard.stack import PASSWORD, REDIS_URL, USER, running_stack  # noqa: E402

TARGET_MS = 300.0


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _measure(client: httpx.Client, path: str, calls: int) -> tuple[float, list[float], int]:
    start = time.perf_counter()
    first = client.get(path)
    first_ms = 1000 * (time.perf_counter() - start)
    times, bad = [], int(first.status_code != 200)
    for _ in range(calls):
        start = time.perf_counter()
        r = client.get(path)
        times.append(1000 * (time.perf_counter() - start))
        bad += r.status_code != 200
    return first_ms, times, bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=200)
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="100 rounds, 50 versions, 10,000 decisions, 20 calls")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.versions, args.decisions, args.calls = 100, 50, 10_000, 20
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        print(
            f"bench_dashboard: Redis is not reachable at {REDIS_URL}: {exc}. Fix: start redis-server", file=sys.stderr
        )
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        t0 = time.perf_counter()
        with running_stack(
            Path(tmp), rounds=args.rounds, versions=args.versions, decisions=args.decisions, name="bench-dashboard"
        ) as stack:
            print(
                f"stack ready in {time.perf_counter() - t0:.0f} s: {args.rounds + 3} rounds, {args.versions + 2} "
                f"versions, {args.decisions:,} decisions ({2 * args.decisions:,} rows), {args.calls} calls per page"
            )
            with httpx.Client(base_url=stack.url, auth=(USER, PASSWORD), timeout=30) as client:
                deep = args.decisions  # a cursor in the middle of the log's 2 x decisions rows
                last_page = (args.rounds + 3 - 1) // 50 + 1
                pages = {
                    "/health (baseline)": "/health",
                    "projects": "/ui/",
                    "Now": "/ui/p/3/",
                    "Value": "/ui/p/3/value",
                    "Rounds, page 1": "/ui/p/3/rounds",
                    f"Rounds, page {last_page} (oldest)": f"/ui/p/3/rounds?page={last_page}",
                    "a round's report": "/ui/p/3/rounds/r0001/",
                    "Agent, newest": "/ui/p/3/agent",
                    "Agent, filtered (review)": "/ui/p/3/agent?action=review",
                    "Agent, middle of the log": f"/ui/p/3/agent?before={deep}",
                    "Agent, filtered, middle": f"/ui/p/3/agent?action=train&before={deep}",
                    "Queue and review": "/ui/p/3/queue",
                }
                results = {name: _measure(client, path, args.calls) for name, path in pages.items()}
    base = _p(results["/health (baseline)"][1], 0.95)
    print(f"\n{'page':<34}{'first':>9}{'p50':>9}{'p95':>9}{'max':>9}{'p95 / health':>14}  (ms)")
    failed = []
    for name, (first, times, bad) in results.items():
        p95 = _p(times, 0.95)
        print(
            f"{name:<34}{first:>9.1f}{statistics.median(times):>9.1f}{p95:>9.1f}{max(times):>9.1f}{p95 / base:>13.1f}x"
            + (f"  {bad} non-200" if bad else "")
        )
        if name != "/health (baseline)" and (p95 >= TARGET_MS or bad):
            failed.append(name)
    if failed:
        print(f"\nMISSED the {TARGET_MS:.0f} ms p95 target (or not 200): {', '.join(failed)}")
        return 1
    print(f"\nEvery page under {TARGET_MS:.0f} ms at p95.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
