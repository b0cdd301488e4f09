"""The feature cache: round trip, idempotence, LRU eviction, damage, sources, concurrent processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from assistant.backbone import ImageFeatures
from tests.conftest import REPO_ROOT
from workers.feature_cache import CachedFeatures, FeatureCache
from workers.media import SourceInfo
from workers.pipeline import from_image_features, to_image_features

DIM, PATCHES = 8, 4
ENTRY_BYTES = 2 * DIM * (1 + PATCHES)


def _entry(seed: int, patches: bool = True) -> CachedFeatures:
    rng = np.random.default_rng(seed)
    glob = rng.standard_normal(DIM).astype(np.float16)
    return CachedFeatures(glob, rng.standard_normal((PATCHES, DIM)).astype(np.float16) if patches else None)


def _items(keys: range | list[int]) -> list[tuple[str, CachedFeatures]]:
    return [(f"h{k}", _entry(k)) for k in keys]


@pytest.fixture
def cache(tmp_path: Path) -> FeatureCache:
    c = FeatureCache(tmp_path / "fc", max_bytes=1 << 20)
    yield c
    c.close()


def test_round_trip_is_exact_and_put_is_idempotent(cache: FeatureCache) -> None:
    items = _items(range(5)) + [("nopatch", _entry(99, patches=False))]
    assert cache.put_many(items, "tower1") == 6
    assert cache.put_many(items, "tower1") == 0  # nothing new, no new segment
    assert cache.stats().segments == 1 and cache.stats().entries == 6
    got = cache.get_many([k for k, _ in items] + ["absent"], "tower1")
    assert set(got) == {k for k, _ in items}
    for key, entry in items:
        np.testing.assert_array_equal(got[key].global_emb, entry.global_emb)
        if entry.patches is None:
            assert got[key].patches is None
        else:
            np.testing.assert_array_equal(got[key].patches, entry.patches)
    # Another image tower is another key space.
    assert cache.get_many(["h0"], "tower2") == {} and cache.contains_many(["h0", "h9"], "tower1") == {"h0"}


def test_conversion_to_and_from_image_features() -> None:
    feats = ImageFeatures(torch.randn(3, DIM), torch.randn(3, PATCHES, DIM))
    entries = from_image_features(feats)
    assert len(entries) == 3 and entries[0].global_emb.dtype == np.float16
    back = to_image_features(entries)
    assert back.global_emb.dtype == torch.float32 and back.patches is not None
    torch.testing.assert_close(back.global_emb, feats.global_emb, atol=2e-3, rtol=2e-3)
    # Mixed entries fall back to the global stream only.
    assert to_image_features([*entries, _entry(1, patches=False)]).patches is None


def test_lru_eviction_stays_within_budget(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "fc", max_bytes=10 * ENTRY_BYTES)
    for batch in range(4):  # 4 segments of 3 entries: 12 entries > budget of 10
        cache.put_many(_items(range(batch * 3, batch * 3 + 3)), "t")
        if batch == 0:
            time.sleep(0.01)
    stats = cache.stats()
    assert stats.bytes <= 10 * ENTRY_BYTES and stats.entries == 9
    assert cache.get_many(["h0", "h1", "h2"], "t") == {}  # the oldest segment went first
    segments = list((tmp_path / "fc" / "segments").glob("*/*.seg"))
    assert len(segments) == stats.segments == 3


def test_recently_read_segments_survive_eviction(tmp_path: Path, monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    cache = FeatureCache(tmp_path / "fc", max_bytes=7 * ENTRY_BYTES)
    cache.put_many(_items([0, 1, 2]), "t")
    clock[0] += 100
    cache.put_many(_items([3, 4, 5]), "t")
    clock[0] += 100
    assert len(cache.get_many(["h0"], "t")) == 1  # touches the first segment
    clock[0] += 100
    cache.put_many(_items([6, 7, 8]), "t")
    assert cache.contains_many([f"h{i}" for i in range(9)], "t") == {"h0", "h1", "h2", "h6", "h7", "h8"}


def test_damaged_entries_are_dropped(cache: FeatureCache, tmp_path: Path) -> None:
    cache.put_many(_items(range(4)), "t")
    (segment,) = (tmp_path / "fc" / "segments").glob("*/*.seg")
    data = bytearray(segment.read_bytes())
    data[ENTRY_BYTES + 3] ^= 0xFF  # flip bits inside the second entry
    segment.write_bytes(bytes(data))
    got = cache.get_many(["h0", "h1", "h2", "h3"], "t")
    assert set(got) == {"h0", "h2", "h3"}
    assert cache.contains_many(["h1"], "t") == set()  # dropped from the index
    # A truncated segment loses the entries past the cut.
    segment.write_bytes(bytes(data[: 2 * ENTRY_BYTES + 5]))
    assert set(cache.get_many(["h0", "h2", "h3"], "t")) == {"h0"}


def test_missing_segment_is_a_miss(cache: FeatureCache, tmp_path: Path) -> None:
    cache.put_many(_items(range(2)), "t")
    for path in (tmp_path / "fc" / "segments").glob("*/*.seg"):
        path.unlink()
    assert cache.get_many(["h0", "h1"], "t") == {}


def test_damaged_index_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "fc").mkdir()
    (tmp_path / "fc" / "index.sqlite").write_bytes(b"this is not a database" * 100)
    cache = FeatureCache(tmp_path / "fc", max_bytes=1 << 20)
    assert cache.put_many(_items(range(2)), "t") == 2
    assert len(cache.get_many(["h0", "h1"], "t")) == 2
    assert list((tmp_path / "fc").glob("index.sqlite.corrupt-*"))


def test_disabled_cache_stores_nothing(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "fc", max_bytes=0)
    assert cache.put_many(_items(range(2)), "t") == 0 and cache.get_many(["h0"], "t") == {}
    assert not (tmp_path / "fc").exists()


def test_source_index_honours_validator_and_age(cache: FeatureCache, monkeypatch) -> None:
    local = SourceInfo("/img/a.png", "10:123", None)
    remote = SourceInfo("http://x/b.png", None, 60.0)
    cache.record_sources([(local, "ha"), (remote, "hb")])
    assert cache.lookup_sources([local, remote]) == {"/img/a.png": "ha", "http://x/b.png": "hb"}
    changed = SourceInfo("/img/a.png", "11:456", None)
    assert cache.lookup_sources([changed]) == {}
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    assert cache.lookup_sources([remote]) == {}


def test_orphan_segments_are_removed(cache: FeatureCache, tmp_path: Path) -> None:
    cache.put_many(_items(range(2)), "t")
    orphan = tmp_path / "fc" / "segments" / "zz" / "zzorphan.seg"
    orphan.parent.mkdir()
    orphan.write_bytes(b"x")
    os.utime(orphan, (0, 0))
    assert cache.remove_orphans() == 1 and not orphan.exists()
    assert len(cache.get_many(["h0", "h1"], "t")) == 2


_WRITER = """
import sys, numpy as np
from pathlib import Path
from workers.feature_cache import CachedFeatures, FeatureCache
cache = FeatureCache(Path(sys.argv[1]), max_bytes=1 << 30)
rng = np.random.default_rng(int(sys.argv[2]))
for batch in range(10):
    # Overlapping keys across processes: each key must end up stored once.
    items = [(f"h{k}", CachedFeatures(np.full(8, k, np.float16), np.full((4, 8), k, np.float16)))
             for k in rng.choice(60, size=8, replace=False)]
    cache.put_many(items, "t")
    got = cache.get_many([k for k, _ in items], "t")
    assert all(float(got[k].global_emb[0]) == float(k[1:]) for k, _ in items), "wrong features read"
"""


def test_concurrent_processes_share_the_cache(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path / "fc"), str(seed)], cwd=REPO_ROOT, stderr=subprocess.PIPE
        )
        for seed in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    cache = FeatureCache(tmp_path / "fc", max_bytes=1 << 30)
    stats = cache.stats()
    keys = [f"h{k}" for k in range(60)]
    got = cache.get_many(keys, "t")
    assert stats.entries == len(got)
    assert all(float(v.global_emb[0]) == float(k[1:]) for k, v in got.items())
    # Segments that lost every insert race were deleted, so the files match the index.
    assert len(list((tmp_path / "fc" / "segments").glob("*/*.seg"))) == stats.segments
