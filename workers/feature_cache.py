"""Image features on disk, keyed by (image content hash, image-tower version), bounded in bytes.

Re-tagging images with a changed vocabulary then costs only text encoding and a matrix product:
the image tower (the expensive part) is skipped for every image already seen by the same image
tower. Layout under ``Settings.feature_cache_dir``::

    index.sqlite             SQLite in WAL mode: entries, segments, the source index
    segments/ab/<id>.seg     one file per stored batch: float16 features, back to back

Why segments and not one file or one SQLite blob per image: re-tagging reads every entry of a
batch together, and one sequential read per batch beats 10,000 opens (measured on 10,000 ViT-B/32
entries of 51 KB: 0.31-0.41 s as files, 0.52-0.65 s as SQLite blobs; segments are read at disk
or page-cache speed). Eviction is least-recently-used per segment, which matches how entries are
written and read (a batch at a time).

Each entry has a checksum (the sum of its 64-bit words: 0.13 s per 512 MB, where crc32 takes
0.4-0.6 s); a truncated or damaged entry is dropped and reported as a miss. Processes on one host
share the cache safely: segment files appear by atomic rename, and the index serialises writers
(WAL lets readers proceed meanwhile). A cache failure never fails a task: it logs and misses.

The source index maps an image location (URL or path) to the content hash last downloaded from
it, so a re-tag can find cached features without downloading the image again; the media layer
decides for how long a location is trusted (:class:`workers.media.SourceInfo`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from workers.media import SourceInfo

__all__ = ["CacheStats", "CachedFeatures", "FeatureCache"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    id TEXT PRIMARY KEY, nbytes INTEGER NOT NULL, created REAL NOT NULL, last_access REAL NOT NULL);
CREATE INDEX IF NOT EXISTS segments_by_access ON segments(last_access);
CREATE TABLE IF NOT EXISTS entries (
    hash TEXT NOT NULL, tower TEXT NOT NULL, segment TEXT NOT NULL, offset INTEGER NOT NULL,
    nbytes INTEGER NOT NULL, dim INTEGER NOT NULL, n_patches INTEGER NOT NULL, checksum INTEGER NOT NULL,
    PRIMARY KEY (hash, tower)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_segment ON entries(segment);
CREATE TABLE IF NOT EXISTS sources (
    key TEXT PRIMARY KEY, hash TEXT NOT NULL, validator TEXT, checked_at REAL NOT NULL) WITHOUT ROWID;
"""
# SQLite's default limit on host parameters in one statement is 999 (older builds).
_SQL_CHUNK = 500
# Read a whole segment when at least this share of it is wanted, else read entry by entry.
_WHOLE_SEGMENT_SHARE = 0.5
# Access times are refreshed at most this often (seconds): one write per re-read batch is enough.
_TOUCH_EVERY_S = 30.0
# Eviction goes down to this share of the budget, so that it does not run on every put.
_EVICT_TO = 0.9
# Segment files not in the index after this long are leftovers of a crash between write and insert.
_ORPHAN_AGE_S = 3600.0
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class CachedFeatures:
    """One image's features as stored: float16, not normalised.

    Attributes:
        global_emb: ``(D,)`` global embedding.
        patches: ``(N, D)`` projected patch tokens, or None for towers without them.
    """

    global_emb: NDArray[np.float16]
    patches: NDArray[np.float16] | None

    @property
    def nbytes(self) -> int:
        """Stored size in bytes."""
        return int(self.global_emb.nbytes + (0 if self.patches is None else self.patches.nbytes))


@dataclass(frozen=True)
class CacheStats:
    """Size of the cache."""

    entries: int
    segments: int
    bytes: int
    sources: int


def _checksum(buf: bytes | memoryview) -> int:
    # The sum of the little-endian 64-bit words (tail bytes as one more word), plus the length.
    # A signed value, because SQLite integers are signed 64-bit.
    n = len(buf) // 8 * 8
    total = int(np.frombuffer(buf, dtype="<u8", count=n // 8).sum(dtype=np.uint64)) if n else 0
    total = (total + int.from_bytes(bytes(buf[n:]), "little") + len(buf)) & _MASK64
    return total - (1 << 64) if total >= 1 << 63 else total


def _chunks(items: Sequence[T], size: int = _SQL_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class FeatureCache:
    """The disk-backed, size-bounded feature cache (see the module docstring).

    Args:
        directory: Where the index and the segments live; created on first use.
        max_bytes: Budget for the segment files; 0 disables the cache.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._local = threading.local()
        # Entries (segment, offset) whose checksum this process has verified. Segment files never
        # change after their atomic rename, so one check per process catches damage done at rest
        # (a crash, a bad disk) while re-reads cost nothing (the sum takes 0.25 s per 10,000
        # ViT-B/32 entries, a quarter of the re-tagging budget).
        self._verified: set[tuple[str, int]] = set()
        self._verified_pid = os.getpid()

    @property
    def enabled(self) -> bool:
        """False when the budget is 0."""
        return self.max_bytes > 0

    # --- connections ----------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        # One connection per thread and per process: sqlite3 connections are not shared across
        # threads, and one inherited through fork() must never be used by the child.
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        (self.directory / "segments").mkdir(parents=True, exist_ok=True)
        path = self.directory / "index.sqlite"
        try:
            conn = self._open(path)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise
            # A damaged index loses the cache, not the task: set it aside and start again.
            aside = path.with_name(f"index.sqlite.corrupt-{int(time.time())}")
            logger.error("feature cache index %s is damaged (%s); moved to %s", path, exc, aside)
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            conn = self._open(path)
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        # Autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE for writers).
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a power loss may drop the last commits, never corrupt the index;
        # fine for a cache.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        return conn

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _guard(self, what: str, fallback: T, fn: Callable[[], T]) -> T:
        if not self.enabled:
            return fallback
        try:
            return fn()
        except (sqlite3.Error, OSError) as exc:
            logger.warning("feature cache %s failed (%s); continuing without the cache", what, exc)
            return fallback

    def _segment_path(self, segment: str) -> Path:
        return self.directory / "segments" / segment[:2] / f"{segment}.seg"

    # --- features -------------------------------------------------------------------------------
    def contains_many(self, hashes: Sequence[str], tower: str) -> set[str]:
        """Which of ``hashes`` have features for ``tower`` (without reading them)."""
        return self._guard("lookup", set(), lambda: self._contains(hashes, tower))

    def _contains(self, hashes: Sequence[str], tower: str) -> set[str]:
        found: set[str] = set()
        conn = self._conn()
        for part in _chunks(list(dict.fromkeys(hashes))):
            marks = ",".join("?" * len(part))
            sql = f"SELECT hash FROM entries WHERE tower = ? AND hash IN ({marks})"
            found.update(row[0] for row in conn.execute(sql, (tower, *part)))
        return found

    def get_many(self, hashes: Sequence[str], tower: str) -> dict[str, CachedFeatures]:
        """The cached features of ``hashes`` for ``tower``; missing and damaged ones are absent."""
        return self._guard("read", {}, lambda: self._get(hashes, tower))

    def _get(self, hashes: Sequence[str], tower: str) -> dict[str, CachedFeatures]:
        conn = self._conn()
        rows: dict[str, tuple[Any, ...]] = {}
        for part in _chunks(list(dict.fromkeys(hashes))):
            marks = ",".join("?" * len(part))
            sql = (
                "SELECT hash, segment, offset, nbytes, dim, n_patches, checksum FROM entries "
                f"WHERE tower = ? AND hash IN ({marks})"
            )
            for row in conn.execute(sql, (tower, *part)):
                rows[row[0]] = row
        by_segment: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for row in rows.values():
            by_segment[row[1]].append(row)
        out: dict[str, CachedFeatures] = {}
        bad: list[str] = []
        for segment, seg_rows in by_segment.items():
            self._read_segment(segment, seg_rows, out, bad)
        if bad:
            self._drop(bad, tower)
        if by_segment:
            self._touch(list(by_segment))
        return out

    def _read_segment(
        self, segment: str, rows: list[tuple[Any, ...]], out: dict[str, CachedFeatures], bad: list[str]
    ) -> None:
        if self._verified_pid != os.getpid():  # a forked child checks for itself
            self._verified, self._verified_pid = set(), os.getpid()
        verified = self._verified
        try:
            with open(self._segment_path(segment), "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                wanted = sum(int(r[3]) for r in rows)
                # Writable buffers: torch.from_numpy on the entries then needs no copy (and no warning).
                whole = _read_into(fh.fileno(), size, 0) if wanted >= _WHOLE_SEGMENT_SHARE * size else None
                for digest, _, offset, nbytes, dim, n_patches, checksum in rows:
                    if whole is not None:
                        buf = whole[offset : offset + nbytes]
                    else:
                        buf = _read_into(fh.fileno(), nbytes, offset)
                    known = (segment, offset) in verified
                    entry = _parse(buf, nbytes, dim, n_patches, None if known else checksum)
                    if entry is None:
                        logger.warning("feature cache entry %s in segment %s is damaged; dropped", digest[:12], segment)
                        bad.append(digest)
                    else:
                        verified.add((segment, offset))
                        out[digest] = entry
        except FileNotFoundError:
            # Evicted by another process between our index read and the open: a plain miss.
            pass

    def _drop(self, hashes: list[str], tower: str) -> None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("DELETE FROM entries WHERE hash = ? AND tower = ?", [(h, tower) for h in hashes])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _touch(self, segments: list[str]) -> None:
        now = time.time()
        conn = self._conn()
        for part in _chunks(segments):
            marks = ",".join("?" * len(part))
            conn.execute(
                f"UPDATE segments SET last_access = ? WHERE last_access < ? AND id IN ({marks})",
                (now, now - _TOUCH_EVERY_S, *part),
            )

    def put_many(self, items: Sequence[tuple[str, CachedFeatures]], tower: str) -> int:
        """Store features (idempotent: keys already present are skipped). Returns how many were new."""
        return self._guard("write", 0, lambda: self._put(items, tower))

    def _put(self, items: Sequence[tuple[str, CachedFeatures]], tower: str) -> int:
        present = self._contains([h for h, _ in items], tower)
        fresh = list({h: f for h, f in items if h not in present}.items())
        if not fresh:
            return 0
        segment = uuid.uuid4().hex
        path = self._segment_path(segment)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows, blobs, offset = [], [], 0
        for digest, feats in fresh:
            blob = feats.global_emb.astype("<f2").tobytes()
            if feats.patches is not None:
                blob += feats.patches.astype("<f2").tobytes()
            n_patches = -1 if feats.patches is None else int(feats.patches.shape[0])
            rows.append(
                (digest, tower, segment, offset, len(blob), int(feats.global_emb.shape[0]), n_patches, _checksum(blob))
            )
            blobs.append(blob)
            offset += len(blob)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        with open(tmp, "wb") as fh:
            fh.writelines(blobs)
        os.replace(tmp, path)
        return self._index(segment, offset, rows)

    def _index(self, segment: str, nbytes: int, rows: list[tuple[Any, ...]]) -> int:
        conn = self._conn()
        now = time.time()
        evicted: list[str] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            added = conn.total_changes - before
            if added:
                conn.execute("INSERT INTO segments VALUES (?, ?, ?, ?)", (segment, nbytes, now, now))
                evicted = self._evict_locked(conn, keep=segment)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            with contextlib.suppress(OSError):
                os.unlink(self._segment_path(segment))
            raise
        if not added:
            # Another process stored the same images meanwhile: this segment is not needed.
            evicted.append(segment)
        for seg in evicted:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._segment_path(seg))
        return added

    def _evict_locked(self, conn: sqlite3.Connection, keep: str) -> list[str]:
        total = int(conn.execute("SELECT COALESCE(SUM(nbytes), 0) FROM segments").fetchone()[0])
        if total <= self.max_bytes:
            return []
        target = _EVICT_TO * self.max_bytes
        victims: list[str] = []
        for seg_id, nbytes in conn.execute("SELECT id, nbytes FROM segments ORDER BY last_access, created").fetchall():
            if total <= target:
                break
            if seg_id == keep and total - nbytes > 0:
                continue
            victims.append(seg_id)
            total -= int(nbytes)
        for part in _chunks(victims):
            marks = ",".join("?" * len(part))
            conn.execute(f"DELETE FROM entries WHERE segment IN ({marks})", tuple(part))
            conn.execute(f"DELETE FROM segments WHERE id IN ({marks})", tuple(part))
        # Locations whose images are no longer cached under any tower are useless now.
        conn.execute("DELETE FROM sources WHERE hash NOT IN (SELECT hash FROM entries)")
        logger.info("feature cache: evicted %d segments to stay under %d bytes", len(victims), self.max_bytes)
        return victims

    # --- source index ---------------------------------------------------------------------------
    def lookup_sources(self, infos: Sequence[SourceInfo]) -> dict[str, str]:
        """Content hashes last seen at these locations, where still trusted (key -> hash)."""
        return self._guard("source lookup", {}, lambda: self._lookup_sources(infos))

    def _lookup_sources(self, infos: Sequence[SourceInfo]) -> dict[str, str]:
        wanted = {info.key: info for info in infos}
        conn = self._conn()
        now = time.time()
        found: dict[str, str] = {}
        for part in _chunks(list(wanted)):
            marks = ",".join("?" * len(part))
            sql = f"SELECT key, hash, validator, checked_at FROM sources WHERE key IN ({marks})"
            for key, digest, validator, checked_at in conn.execute(sql, tuple(part)):
                info = wanted[key]
                fresh = info.max_age_s is None or now - float(checked_at) <= info.max_age_s
                if fresh and validator == info.validator:
                    found[key] = digest
        return found

    def record_sources(self, pairs: Sequence[tuple[SourceInfo, str]]) -> None:
        """Remember which content hash each location served."""
        self._guard("source write", None, lambda: self._record_sources(pairs))

    def _record_sources(self, pairs: Sequence[tuple[SourceInfo, str]]) -> None:
        if not pairs:
            return
        now = time.time()
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?)",
                [(info.key, digest, info.validator, now) for info, digest in pairs],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # --- maintenance ----------------------------------------------------------------------------
    def stats(self) -> CacheStats:
        """Entry, segment and source counts, and the bytes on disk."""

        def _stats() -> CacheStats:
            conn = self._conn()
            entries = int(conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
            segs, nbytes = conn.execute("SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM segments").fetchone()
            sources = int(conn.execute("SELECT COUNT(*) FROM sources").fetchone()[0])
            return CacheStats(entries, int(segs), int(nbytes), sources)

        return self._guard("stats", CacheStats(0, 0, 0, 0), _stats)

    def remove_orphans(self, min_age_s: float = _ORPHAN_AGE_S) -> int:
        """Delete segment files the index does not know (a crash between write and insert)."""

        def _remove() -> int:
            known = {row[0] for row in self._conn().execute("SELECT id FROM segments")}
            removed = 0
            for path in (self.directory / "segments").glob("*/*"):
                segment = path.name.split(".")[0]
                if segment not in known and time.time() - path.stat().st_mtime > min_age_s:
                    path.unlink(missing_ok=True)
                    removed += 1
            return removed

        return self._guard("cleanup", 0, _remove)


def _read_into(fd: int, size: int, offset: int) -> memoryview:
    buf = bytearray(size)
    got = os.preadv(fd, [buf], offset)
    return memoryview(buf)[:got]


def _parse(
    buf: bytes | memoryview, nbytes: int, dim: int, n_patches: int, checksum: int | None
) -> CachedFeatures | None:
    # checksum None: already verified by this process (sizes are still checked).
    expected = 2 * dim * (1 + max(n_patches, 0))
    if len(buf) != nbytes or nbytes != expected or (checksum is not None and _checksum(buf) != checksum):
        return None
    values = np.frombuffer(buf, dtype="<f2")
    glob = values[:dim]
    patches = None if n_patches < 0 else values[dim:].reshape(n_patches, dim)
    return CachedFeatures(glob, patches)
