"""The effort ledger: what annotators did with each pre-annotation, per tag, beside the corrections.

Every annotation of a pre-annotated task is compared with the prediction its annotator started
from (``backends.effort`` does the comparison): per tag, **kept** (shown and kept), **removed**
(shown, not in the annotation), **added** (in the annotation, not shown). This module stores those
counts durably, in the corrections ledger's database (:func:`state.ledger.open_ledger` creates
the tables; :attr:`state.ledger.Ledger.effort` is this store), and the state that acts on them:
the project's recalibration refits and the per-tag guard. The records it writes and returns are
in :mod:`state.effort_records`.

Tables (``<prefix>`` as the ledger's)::

    <prefix>effort           one row per counted annotation (its latest revision): the prediction
                             it started from, that prediction's model version, checkpoint and
                             calibration, kept / removed / added, whether it cost more than
                             labeling from scratch. Keyset pages by (project, seq).
    <prefix>effort_answers   one row per (annotation, tag) the prediction scored or the annotator
                             chose: shown, present, the model's own probability and the one
                             served (after the project's recalibration), which refit served it.
                             The (probability, answer) pairs a refit fits on.
    <prefix>effort_totals    kept / removed / added per (project, model version, tag, seen or
                             novel), kept up to date in the same transaction: status, /metrics
                             and the guard read these, never the rows.
    <prefix>effort_versions  tasks / kept / removed / added / costlier per (project, model version).
    <prefix>effort_state     per project: how far the corrections are counted (a corrections
                             ``seq``), what was skipped, and the last counting failure.
    <prefix>recalibrations   every refit of a project's calibration (fitted or failed), per
                             checkpoint; the latest fitted one is applied before the rule.
    <prefix>guard            per (project, tag): active or tripped, under which checkpoint, the
                             counts its current judgement starts from.
    <prefix>guard_events     every trip and resumption, with the reason (the agent logs them).
    <prefix>serving          which kind of calibration each checkpoint served a project with
                             (``platt``, ``prior``, ``default``), as the workers reported it.

The counting is durable without a queue of its own: the corrections ledger already holds every
annotation event, and ``effort_state.counted_through`` says how far they are counted. What lies
beyond it is still to count; a failure leaves it there, in ``status``, until a later pass counts it.
An annotation counted again (an update) replaces its earlier counts; a deletion removes them.

Light on purpose (stdlib, numpy through :mod:`preannotation`, the SQL store): the web process,
the workers, the agent and the CLI read it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal

from preannotation import EditCosts, EffortTotals, Recalibration, TagEffort
from state.effort_records import (
    CountedAnnotation,
    CountState,
    EffortRow,
    GuardEvent,
    GuardState,
    RefitRecord,
    TagTotals,
    VersionEffort,
    checkpoint_of,
)
from state.sqlstore import SQLStore

__all__ = ["SKIP_REASONS", "EffortStore", "effort_schema"]

#: Reasons an annotation is not counted (``effort_state`` counters).
SKIP_REASONS: Final = ("cancelled", "unpredicted", "failed")
_PAGE_MAX: Final = 10_000


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def effort_schema(prefix: str, *, postgres: bool) -> list[str]:
    """The effort ledger's tables and indexes (created with the corrections ledger's)."""
    seq = "BIGSERIAL PRIMARY KEY" if postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
    big = "BIGINT" if postgres else "INTEGER"
    real = "DOUBLE PRECISION" if postgres else "REAL"
    p = prefix
    return [
        f"""CREATE TABLE IF NOT EXISTS {p}effort (
            seq {seq}, project {big} NOT NULL, annotation_id {big} NOT NULL, task {big},
            event_seq {big} NOT NULL, prediction_id {big}, source TEXT NOT NULL,
            model_version TEXT NOT NULL, checkpoint TEXT NOT NULL, calibration TEXT NOT NULL,
            recalibration TEXT, kept INTEGER NOT NULL, removed INTEGER NOT NULL, added INTEGER NOT NULL,
            costlier INTEGER NOT NULL, annotated_at TEXT, counted_at TEXT NOT NULL,
            UNIQUE (project, annotation_id))""",
        f"CREATE INDEX IF NOT EXISTS {p}effort_project_seq ON {p}effort (project, seq)",
        f"CREATE INDEX IF NOT EXISTS {p}effort_checkpoint_seq ON {p}effort (project, checkpoint, seq)",
        f"""CREATE TABLE IF NOT EXISTS {p}effort_answers (
            seq {seq}, project {big} NOT NULL, annotation_id {big} NOT NULL, checkpoint TEXT NOT NULL,
            model_version TEXT NOT NULL, tag TEXT NOT NULL, novel INTEGER NOT NULL, shown INTEGER NOT NULL,
            present INTEGER NOT NULL, model_p {real}, served_p {real}, recalibration TEXT)""",
        f"CREATE INDEX IF NOT EXISTS {p}effort_answers_pairs ON {p}effort_answers (project, checkpoint, seq)",
        f"CREATE INDEX IF NOT EXISTS {p}effort_answers_annotation ON {p}effort_answers (project, annotation_id)",
        f"CREATE INDEX IF NOT EXISTS {p}effort_answers_tag ON {p}effort_answers (project, checkpoint, tag, seq)",
        f"""CREATE TABLE IF NOT EXISTS {p}effort_totals (
            project {big} NOT NULL, model_version TEXT NOT NULL, checkpoint TEXT NOT NULL, tag TEXT NOT NULL,
            novel INTEGER NOT NULL, kept {big} NOT NULL, removed {big} NOT NULL, added {big} NOT NULL,
            PRIMARY KEY (project, model_version, tag, novel))""",
        f"CREATE INDEX IF NOT EXISTS {p}effort_totals_checkpoint ON {p}effort_totals (project, checkpoint)",
        f"""CREATE TABLE IF NOT EXISTS {p}effort_versions (
            project {big} NOT NULL, model_version TEXT NOT NULL, checkpoint TEXT NOT NULL,
            tasks {big} NOT NULL, kept {big} NOT NULL, removed {big} NOT NULL, added {big} NOT NULL,
            costlier {big} NOT NULL, first_at TEXT, last_at TEXT, PRIMARY KEY (project, model_version))""",
        f"""CREATE TABLE IF NOT EXISTS {p}effort_state (
            project {big} PRIMARY KEY, counted_through {big} NOT NULL, counted {big} NOT NULL,
            cancelled {big} NOT NULL, unpredicted {big} NOT NULL, failed {big} NOT NULL,
            failures {big} NOT NULL, error TEXT, error_at TEXT, updated_at TEXT NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS {p}recalibrations (
            seq {seq}, project {big} NOT NULL, checkpoint TEXT NOT NULL, status TEXT NOT NULL, record TEXT,
            answers {big} NOT NULL, annotations {big} NOT NULL, through_seq {big} NOT NULL, error TEXT,
            at TEXT NOT NULL)""",
        f"CREATE INDEX IF NOT EXISTS {p}recalibrations_checkpoint ON {p}recalibrations (project, checkpoint, seq)",
        f"""CREATE TABLE IF NOT EXISTS {p}guard (
            project {big} NOT NULL, tag TEXT NOT NULL, state TEXT NOT NULL, checkpoint TEXT NOT NULL,
            kept_base {big} NOT NULL, removed_base {big} NOT NULL, since_seq {big} NOT NULL,
            recalibration TEXT, reason TEXT NOT NULL, changed_at TEXT NOT NULL, PRIMARY KEY (project, tag))""",
        f"""CREATE TABLE IF NOT EXISTS {p}guard_events (
            seq {seq}, project {big} NOT NULL, tag TEXT NOT NULL, event TEXT NOT NULL, checkpoint TEXT NOT NULL,
            kept {big} NOT NULL, removed {big} NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL)""",
        f"CREATE INDEX IF NOT EXISTS {p}guard_events_project_seq ON {p}guard_events (project, seq)",
        f"""CREATE TABLE IF NOT EXISTS {p}serving (
            project {big} NOT NULL, checkpoint TEXT NOT NULL, calibration TEXT NOT NULL, first_at TEXT NOT NULL,
            PRIMARY KEY (project, checkpoint))""",
    ]


# --- the store ------------------------------------------------------------------------------------
class EffortStore:
    """The effort ledger's tables (module docstring). Thread-safe; one transaction per call.

    Args:
        store: The corrections ledger's store (:func:`state.ledger.open_ledger`).
        prefix: The ledger's table prefix.
    """

    def __init__(self, store: SQLStore, prefix: str) -> None:
        self._store = store
        self._t = prefix
        self._p = store.placeholder

    def _marks(self, n: int) -> str:
        return ", ".join([self._p] * n)

    # --- counting ---------------------------------------------------------------------------------
    def record(
        self,
        project: int,
        *,
        through: int,
        counted: Sequence[CountedAnnotation] = (),
        deleted: Iterable[int] = (),
        uncounted: Iterable[int] = (),
        skipped: Mapping[str, int] | None = None,
        costs: EditCosts | None = None,
    ) -> None:
        """Store a counting pass's results and move the project's cursor to ``through``, atomically.

        Args:
            project: The project.
            through: The last corrections-ledger ``seq`` the pass looked at.
            counted: Annotations compared (an annotation counted before is replaced).
            deleted: Annotations deleted in Label Studio (their counts go).
            uncounted: Annotations whose latest revision is not counted (cancelled, no
                prediction): earlier counts of theirs go.
            skipped: Revisions not counted, by reason (:data:`SKIP_REASONS`).
            costs: The project's edit costs (which tasks cost more than from scratch).
        """
        now = _now()
        with self._store.cursor() as cur:
            for annotation in [*deleted, *uncounted, *(c.annotation_id for c in counted)]:
                self._forget(cur, project, annotation)
            for c in counted:
                self._insert(cur, project, c, costs, now)
            self._advance(cur, project, through, len(counted), dict(skipped or {}), now)

    def _forget(self, cur: Any, project: int, annotation: int) -> None:
        p, t = self._p, self._t
        cur.execute(
            f"SELECT model_version, checkpoint, kept, removed, added, costlier FROM {t}effort "
            f"WHERE project = {p} AND annotation_id = {p}",
            (project, annotation),
        )
        row = cur.fetchone()
        if row is None:
            return
        version, checkpoint = str(row[0]), str(row[1])
        kept, removed, added, costlier = (int(v) for v in row[2:6])
        self._add_version(cur, project, version, checkpoint, -1, -kept, -removed, -added, -costlier, None)
        cur.execute(
            f"SELECT tag, novel, shown, present FROM {t}effort_answers WHERE project = {p} AND annotation_id = {p}",
            (project, annotation),
        )
        for tag, novel, shown, present in cur.fetchall():
            k, r, a = _states(bool(shown), bool(present))
            if k or r or a:
                self._add_tag(cur, project, version, checkpoint, str(tag), bool(novel), -k, -r, -a)
        cur.execute(f"DELETE FROM {t}effort_answers WHERE project = {p} AND annotation_id = {p}", (project, annotation))
        cur.execute(f"DELETE FROM {t}effort WHERE project = {p} AND annotation_id = {p}", (project, annotation))

    def _insert(self, cur: Any, project: int, c: CountedAnnotation, costs: EditCosts | None, now: str) -> None:
        t = self._t
        edits = c.edits
        kept, removed, added = len(edits.kept), len(edits.removed), len(edits.added)
        checkpoint = checkpoint_of(c.model_version)
        costlier = int(edits.costlier(costs))
        cur.execute(
            f"INSERT INTO {t}effort (project, annotation_id, task, event_seq, prediction_id, source, model_version, "
            "checkpoint, calibration, recalibration, kept, removed, added, costlier, annotated_at, counted_at) "
            f"VALUES ({self._marks(16)})",
            (
                project,
                c.annotation_id,
                c.task,
                c.event_seq,
                c.prediction_id,
                c.source,
                c.model_version,
                checkpoint,
                c.calibration,
                c.recalibration,
                kept,
                removed,
                added,
                costlier,
                c.annotated_at,
                now,
            ),
        )
        self._add_version(cur, project, c.model_version, checkpoint, 1, kept, removed, added, costlier, c.annotated_at)
        for a in c.answers:
            cur.execute(
                f"INSERT INTO {t}effort_answers (project, annotation_id, checkpoint, model_version, tag, novel, shown, "
                f"present, model_p, served_p, recalibration) VALUES ({self._marks(11)})",
                (
                    project,
                    c.annotation_id,
                    checkpoint,
                    c.model_version,
                    a.tag,
                    int(a.novel),
                    int(a.shown),
                    int(a.present),
                    a.model_p,
                    a.served_p,
                    c.recalibration,
                ),
            )
            k, r, d = _states(a.shown, a.present)
            if k or r or d:
                self._add_tag(cur, project, c.model_version, checkpoint, a.tag, a.novel, k, r, d)

    def _add_tag(
        self, cur: Any, project: int, version: str, checkpoint: str, tag: str, novel: bool, k: int, r: int, a: int
    ) -> None:
        t = self._t
        cur.execute(
            f"INSERT INTO {t}effort_totals (project, model_version, checkpoint, tag, novel, kept, removed, added) "
            f"VALUES ({self._marks(8)}) ON CONFLICT (project, model_version, tag, novel) DO UPDATE SET "
            f"kept = {t}effort_totals.kept + excluded.kept, removed = {t}effort_totals.removed + excluded.removed, "
            f"added = {t}effort_totals.added + excluded.added",
            (project, version, checkpoint, tag, int(novel), k, r, a),
        )

    def _add_version(
        self,
        cur: Any,
        project: int,
        version: str,
        checkpoint: str,
        tasks: int,
        kept: int,
        removed: int,
        added: int,
        costlier: int,
        at: str | None,
    ) -> None:
        t = self._t
        # first_at / last_at only ever widen: a re-count or deletion leaves them (a time range).
        cur.execute(
            f"INSERT INTO {t}effort_versions (project, model_version, checkpoint, tasks, kept, removed, added, "
            f"costlier, first_at, last_at) VALUES ({self._marks(10)}) ON CONFLICT (project, model_version) DO UPDATE "
            f"SET tasks = {t}effort_versions.tasks + excluded.tasks, "
            f"kept = {t}effort_versions.kept + excluded.kept, "
            f"removed = {t}effort_versions.removed + excluded.removed, "
            f"added = {t}effort_versions.added + excluded.added, "
            f"costlier = {t}effort_versions.costlier + excluded.costlier, "
            f"first_at = COALESCE({t}effort_versions.first_at, excluded.first_at), "
            f"last_at = COALESCE(excluded.last_at, {t}effort_versions.last_at)",
            (project, version, checkpoint, tasks, kept, removed, added, costlier, at, at),
        )

    def _advance(self, cur: Any, project: int, through: int, counted: int, skipped: dict[str, int], now: str) -> None:
        t = self._t
        cur.execute(
            f"INSERT INTO {t}effort_state (project, counted_through, counted, cancelled, unpredicted, failed, "
            f"failures, error, error_at, updated_at) VALUES ({self._marks(10)}) ON CONFLICT (project) DO UPDATE SET "
            f"counted_through = CASE WHEN excluded.counted_through > {t}effort_state.counted_through "
            f"THEN excluded.counted_through ELSE {t}effort_state.counted_through END, "
            f"counted = {t}effort_state.counted + excluded.counted, "
            f"cancelled = {t}effort_state.cancelled + excluded.cancelled, "
            f"unpredicted = {t}effort_state.unpredicted + excluded.unpredicted, "
            f"failed = {t}effort_state.failed + excluded.failed, "
            "failures = 0, error = NULL, error_at = NULL, updated_at = excluded.updated_at",
            (
                project,
                through,
                counted,
                skipped.get("cancelled", 0),
                skipped.get("unpredicted", 0),
                skipped.get("failed", 0),
                0,
                None,
                None,
                now,
            ),
        )

    def note_failure(self, project: int, error: str) -> CountState:
        """Record a counting pass that could not go through (the cursor stays; ``status`` shows it)."""
        t, now = self._t, _now()
        with self._store.cursor() as cur:
            cur.execute(
                f"INSERT INTO {t}effort_state (project, counted_through, counted, cancelled, unpredicted, failed, "
                f"failures, error, error_at, updated_at) VALUES ({self._marks(10)}) ON CONFLICT (project) DO UPDATE "
                f"SET failures = {t}effort_state.failures + 1, error = excluded.error, error_at = excluded.error_at, "
                "updated_at = excluded.updated_at",
                (project, 0, 0, 0, 0, 0, 1, error[:2000], now, now),
            )
        return self.state(project)

    def state(self, project: int) -> CountState:
        """How far the project is counted (zeros before its first pass)."""
        with self._store.cursor() as cur:
            cur.execute(
                f"SELECT counted_through, counted, cancelled, unpredicted, failed, failures, error, error_at, "
                f"updated_at FROM {self._t}effort_state WHERE project = {self._p}",
                (project,),
            )
            row = cur.fetchone()
        if row is None:
            return CountState()
        skipped = {"cancelled": int(row[2]), "unpredicted": int(row[3]), "failed": int(row[4])}
        return CountState(int(row[0]), int(row[1]), skipped, int(row[5]), row[6], row[7], row[8])

    def projects(self) -> list[int]:
        """Projects with a counting state, ascending."""
        with self._store.cursor() as cur:
            cur.execute(f"SELECT project FROM {self._t}effort_state ORDER BY project")
            return [int(r[0]) for r in cur.fetchall()]

    # --- reading the counts -----------------------------------------------------------------------
    def tag_totals(
        self, project: int, *, checkpoint: str | None = None, model_version: str | None = None
    ) -> dict[str, TagTotals]:
        """Kept / removed / added per tag, summed over the model versions asked for (all by default)."""
        p = self._p
        where = f"project = {p}"
        args: list[Any] = [project]
        if checkpoint is not None:
            where, args = f"{where} AND checkpoint = {p}", [*args, checkpoint]
        if model_version is not None:
            where, args = f"{where} AND model_version = {p}", [*args, model_version]
        with self._store.cursor() as cur:
            cur.execute(
                f"SELECT tag, MAX(novel), SUM(kept), SUM(removed), SUM(added) FROM {self._t}effort_totals "
                f"WHERE {where} GROUP BY tag ORDER BY tag",
                tuple(args),
            )
            rows = cur.fetchall()
        out = {}
        for tag, novel, kept, removed, added in rows:
            effort = TagEffort(int(kept), int(removed), int(added))
            if effort.shown or effort.present:
                out[str(tag)] = TagTotals(str(tag), bool(novel), effort)
        return out

    def versions(self, project: int) -> list[VersionEffort]:
        """The effort per model version, oldest first."""
        with self._store.cursor() as cur:
            cur.execute(
                f"SELECT model_version, checkpoint, tasks, kept, removed, added, costlier, first_at, last_at "
                f"FROM {self._t}effort_versions WHERE project = {self._p} AND tasks > 0 "
                "ORDER BY first_at, model_version",
                (project,),
            )
            rows = cur.fetchall()
        return [
            VersionEffort(
                str(r[0]), str(r[1]), EffortTotals(int(r[2]), int(r[3]), int(r[4]), int(r[5]), int(r[6])), r[7], r[8]
            )
            for r in rows
        ]

    def page(self, project: int, *, after: int = 0, limit: int = 1000) -> list[EffortRow]:
        """Counted annotations after ``seq`` ``after``, oldest first (keyset paging: pass the last ``seq``)."""
        with self._store.cursor() as cur:
            cur.execute(
                "SELECT seq, annotation_id, task, prediction_id, source, model_version, calibration, recalibration, "
                f"kept, removed, added, costlier, annotated_at, counted_at FROM {self._t}effort "
                f"WHERE project = {self._p} AND seq > {self._p} ORDER BY seq LIMIT {self._p}",
                (project, after, max(1, min(int(limit), _PAGE_MAX))),
            )
            rows = cur.fetchall()
        return [
            EffortRow(
                int(r[0]),
                int(r[1]),
                None if r[2] is None else int(r[2]),
                None if r[3] is None else int(r[3]),
                str(r[4]),
                str(r[5]),
                str(r[6]),
                r[7],
                int(r[8]),
                int(r[9]),
                int(r[10]),
                bool(r[11]),
                r[12],
                str(r[13]),
            )
            for r in rows
        ]

    def annotations(self, project: int, *, checkpoint: str, after_seq: int = 0) -> tuple[int, int]:
        """``(count, last seq)`` of the annotations counted for ``checkpoint`` after ``effort`` seq ``after_seq``."""
        with self._store.cursor() as cur:
            cur.execute(
                f"SELECT COUNT(*), MAX(seq) FROM {self._t}effort WHERE project = {self._p} AND checkpoint = {self._p} "
                f"AND seq > {self._p}",
                (project, checkpoint, after_seq),
            )
            row = cur.fetchone()
        return int(row[0]), int(row[1] or after_seq)

    def pairs(self, project: int, checkpoint: str, *, limit: int) -> tuple[list[str], list[float], list[bool]]:
        """The newest (tag, model probability, answer) pairs of ``checkpoint`` (with a probability)."""
        with self._store.cursor() as cur:
            cur.execute(
                f"SELECT tag, model_p, present FROM {self._t}effort_answers WHERE project = {self._p} AND "
                f"checkpoint = {self._p} AND model_p IS NOT NULL ORDER BY seq DESC LIMIT {self._p}",
                (project, checkpoint, max(1, int(limit))),
            )
            rows = cur.fetchall()
        return [str(r[0]) for r in rows], [float(r[1]) for r in rows], [bool(r[2]) for r in rows]

    def tag_showings(
        self, project: int, checkpoint: str, tag: str, *, after_seq: int = 0
    ) -> tuple[list[float], list[float], list[bool], int]:
        """A tag's showings under ``checkpoint`` after ``effort_answers`` seq ``after_seq``.

        Returns:
            Served probabilities, the model's own, the answers (kept or not), and the last seq.
        """
        with self._store.cursor() as cur:
            cur.execute(
                f"SELECT served_p, model_p, present, seq FROM {self._t}effort_answers WHERE project = {self._p} AND "
                f"checkpoint = {self._p} AND tag = {self._p} AND seq > {self._p} AND shown = 1 AND "
                "served_p IS NOT NULL AND model_p IS NOT NULL ORDER BY seq",
                (project, checkpoint, tag, after_seq),
            )
            rows = cur.fetchall()
        last = int(rows[-1][3]) if rows else after_seq
        return [float(r[0]) for r in rows], [float(r[1]) for r in rows], [bool(r[2]) for r in rows], last

    def last_answer_seq(self, project: int) -> int:
        """The newest ``effort_answers`` seq of the project (0 without any)."""
        with self._store.cursor() as cur:
            cur.execute(f"SELECT MAX(seq) FROM {self._t}effort_answers WHERE project = {self._p}", (project,))
            row = cur.fetchone()
        return int(row[0] or 0)

    # --- recalibration ----------------------------------------------------------------------------
    def save_refit(
        self,
        project: int,
        checkpoint: str,
        *,
        recalibration: Recalibration | None,
        annotations: int,
        through_seq: int,
        error: str | None = None,
    ) -> RefitRecord:
        """Store a refit: fitted (``recalibration`` given) or failed (``error``)."""
        status: Literal["fitted", "failed"] = "fitted" if recalibration is not None else "failed"
        record = None if recalibration is None else json.dumps(recalibration.to_dict(), sort_keys=True)
        answers = 0 if recalibration is None else recalibration.answers
        now = _now()
        with self._store.cursor() as cur:
            cur.execute(
                f"INSERT INTO {self._t}recalibrations (project, checkpoint, status, record, answers, annotations, "
                f"through_seq, error, at) VALUES ({self._marks(9)}) RETURNING seq",
                (project, checkpoint, status, record, answers, annotations, through_seq, error, now),
            )
            seq = int(cur.fetchone()[0])
        return RefitRecord(
            f"r{seq}",
            checkpoint,
            status,
            recalibration,
            answers,
            annotations,
            through_seq,
            error,
            now,
        )

    def _refits(self, where: str, args: Sequence[Any], limit: int) -> list[RefitRecord]:
        with self._store.cursor() as cur:
            cur.execute(
                "SELECT seq, checkpoint, status, record, answers, annotations, through_seq, error, at "
                f"FROM {self._t}recalibrations WHERE {where} ORDER BY seq DESC LIMIT {int(limit)}",
                tuple(args),
            )
            rows = cur.fetchall()
        out = []
        for seq, checkpoint, status, record, answers, count, through, error, at in rows:
            recal = None if record is None else Recalibration.from_dict(json.loads(record))
            state: Literal["fitted", "failed"] = "fitted" if status == "fitted" else "failed"
            out.append(
                RefitRecord(f"r{seq}", str(checkpoint), state, recal, int(answers), int(count), int(through), error, at)
            )
        return out

    def last_refit(self, project: int, checkpoint: str, *, fitted_only: bool = False) -> RefitRecord | None:
        """The latest refit of ``checkpoint`` in the project (the latest fitted one with ``fitted_only``)."""
        p = self._p
        where = f"project = {p} AND checkpoint = {p}" + (" AND status = 'fitted'" if fitted_only else "")
        found = self._refits(where, (project, checkpoint), 1)
        return found[0] if found else None

    def refit_counts(self, project: int) -> dict[str, int]:
        """Refits of the project by status (``fitted``, ``failed``)."""
        with self._store.cursor() as cur:
            cur.execute(
                f"SELECT status, COUNT(*) FROM {self._t}recalibrations WHERE project = {self._p} GROUP BY status",
                (project,),
            )
            return {str(r[0]): int(r[1]) for r in cur.fetchall()}

    def refits(self, project: int, *, limit: int = 20) -> list[RefitRecord]:
        """The project's latest refits, newest first."""
        return self._refits(f"project = {self._p}", (project,), limit)

    # --- the guard --------------------------------------------------------------------------------
    def guard(self, project: int) -> dict[str, GuardState]:
        """Every tag the guard has a state for in the project."""
        with self._store.cursor() as cur:
            cur.execute(
                "SELECT tag, state, checkpoint, kept_base, removed_base, since_seq, recalibration, reason, changed_at "
                f"FROM {self._t}guard WHERE project = {self._p} ORDER BY tag",
                (project,),
            )
            rows = cur.fetchall()
        return {
            str(r[0]): GuardState(str(r[0]), r[1], str(r[2]), int(r[3]), int(r[4]), int(r[5]), r[6], str(r[7]), r[8])
            for r in rows
        }

    def suppressed(self, project: int, checkpoint: str) -> frozenset[str]:
        """Tags tripped under ``checkpoint``: never shown while it serves (a newer one resumes them)."""
        with self._store.cursor() as cur:
            cur.execute(
                f"SELECT tag FROM {self._t}guard WHERE project = {self._p} AND checkpoint = {self._p} "
                "AND state = 'tripped'",
                (project, checkpoint),
            )
            return frozenset(str(r[0]) for r in cur.fetchall())

    def set_guard(
        self, project: int, state: GuardState, event: Literal["tripped", "resumed"] | None, kept: int, removed: int
    ) -> None:
        """Write a tag's guard state, and the event that changed it (None: only its counts moved)."""
        t, now = self._t, _now()
        with self._store.cursor() as cur:
            cur.execute(
                f"INSERT INTO {t}guard (project, tag, state, checkpoint, kept_base, removed_base, since_seq, "
                f"recalibration, reason, changed_at) VALUES ({self._marks(10)}) ON CONFLICT (project, tag) DO UPDATE "
                "SET state = excluded.state, checkpoint = excluded.checkpoint, kept_base = excluded.kept_base, "
                "removed_base = excluded.removed_base, since_seq = excluded.since_seq, "
                "recalibration = excluded.recalibration, reason = excluded.reason, changed_at = excluded.changed_at",
                (
                    project,
                    state.tag,
                    state.state,
                    state.checkpoint,
                    state.kept_base,
                    state.removed_base,
                    state.since_seq,
                    state.recalibration,
                    state.reason,
                    now,
                ),
            )
            if event is not None:
                cur.execute(
                    f"INSERT INTO {t}guard_events (project, tag, event, checkpoint, kept, removed, reason, at) "
                    f"VALUES ({self._marks(8)})",
                    (project, state.tag, event, state.checkpoint, kept, removed, state.reason, now),
                )

    def last_guard_event(self, project: int) -> int:
        """The newest guard event's ``seq`` in the project (0 without any)."""
        with self._store.cursor() as cur:
            cur.execute(f"SELECT MAX(seq) FROM {self._t}guard_events WHERE project = {self._p}", (project,))
            row = cur.fetchone()
        return int(row[0] or 0)

    def guard_events(self, project: int, *, after: int = 0, limit: int = 1000) -> list[GuardEvent]:
        """Trips and resumptions after ``seq`` ``after``, oldest first."""
        with self._store.cursor() as cur:
            cur.execute(
                f"SELECT seq, project, tag, event, checkpoint, kept, removed, reason, at FROM {self._t}guard_events "
                f"WHERE project = {self._p} AND seq > {self._p} ORDER BY seq LIMIT {int(limit)}",
                (project, after),
            )
            rows = cur.fetchall()
        return [
            GuardEvent(int(r[0]), int(r[1]), str(r[2]), r[3], str(r[4]), int(r[5]), int(r[6]), str(r[7]), str(r[8]))
            for r in rows
        ]

    # --- what the workers served --------------------------------------------------------------------
    def note_serving(self, project: int, checkpoint: str, calibration: str) -> None:
        """Record the kind of calibration ``checkpoint`` serves the project with (the first report wins)."""
        with self._store.cursor() as cur:
            cur.execute(
                f"INSERT INTO {self._t}serving (project, checkpoint, calibration, first_at) VALUES ({self._marks(4)}) "
                "ON CONFLICT (project, checkpoint) DO NOTHING",
                (project, checkpoint, calibration, _now()),
            )

    def serving(self, project: int, checkpoint: str) -> str | None:
        """The kind of calibration ``checkpoint`` served the project with, if it served it yet."""
        with self._store.cursor() as cur:
            cur.execute(
                f"SELECT calibration FROM {self._t}serving WHERE project = {self._p} AND checkpoint = {self._p}",
                (project, checkpoint),
            )
            row = cur.fetchone()
        return None if row is None else str(row[0])


def _states(shown: bool, present: bool) -> tuple[int, int, int]:
    """(kept, removed, added) increments of one tag answer."""
    return int(shown and present), int(shown and not present), int(present and not shown)
