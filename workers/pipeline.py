"""The work behind the model tasks, as plain functions (the tasks only validate and wrap them).

One batch goes: locate every image (the source index may already know its content hash) →
features from the cache for the hits → download, hash, decode and preprocess the misses on the
media threads while the model encodes earlier batches (fetching batch k+1 overlaps computing
batch k) → new features into the cache → scores for the request's vocabulary.

Scores are always computed from float16 features, the form the cache stores, so the same
request gives the same scores whether its images were cached or not. Each image that cannot be
fetched or decoded becomes an ``ImageFailure`` in the result; the rest of the batch goes on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from assistant.backbone import ImageFeatures
from assistant.selection import PoolBuilder, SelectionPool, create_strategy
from errors import AssistantError
from state.contracts import (
    EMBED,
    PREDICT,
    EmbedRequest,
    EmbedResult,
    ImageFailure,
    ImageRef,
    ImageScores,
    ImageStatus,
    PoolScore,
    PredictRequest,
    PredictResult,
    ScorePoolRequest,
    ScorePoolResult,
)
from state.metrics import worker_metrics
from workers.errors import MediaError, RequestError
from workers.feature_cache import CachedFeatures
from workers.images import decode_image
from workers.media import SourceInfo
from workers.runtime import CACHE_READERS, SCORE_CHUNK, LoadedVersion, Runtime

__all__ = [
    "collect_features",
    "embed",
    "encode_adaptive",
    "from_image_features",
    "predict",
    "score_pool",
    "to_image_features",
]

logger = logging.getLogger(__name__)

# Scores are rounded in results: 6 decimals is far below any threshold's meaning and keeps JSON
# small and stable.
SCORE_DECIMALS = 6

Consumer = Callable[[list[int], ImageFeatures], None]
# Chunks of cached features being read while one is scored (Runtime.cache_reader has as many
# threads). Measured re-tagging 10,000 ViT-B/32 entries on 2 busy cores: 2.3-2.9 s reading inline,
# 1.2 s with one reader thread, no better with two (the cores are saturated).
READ_AHEAD = CACHE_READERS


@dataclass
class _Slot:
    index: int
    ref: ImageRef
    source: SourceInfo | None
    digest: str | None = None
    cached: bool = False
    failure: ImageFailure | None = None


@dataclass(frozen=True)
class _Prepared:
    digest: str
    pixels: torch.Tensor | None
    cached: CachedFeatures | None


def from_image_features(features: ImageFeatures) -> list[CachedFeatures]:
    """Split a batch of features into per-image float16 entries."""
    glob = features.global_emb.detach().to("cpu", torch.float16).numpy()
    patches = None if features.patches is None else features.patches.detach().to("cpu", torch.float16).numpy()
    return [CachedFeatures(glob[i], None if patches is None else patches[i]) for i in range(glob.shape[0])]


def to_image_features(entries: Sequence[CachedFeatures]) -> ImageFeatures:
    """Stack entries into a float32 batch (patches dropped unless every entry has them)."""
    glob = torch.from_numpy(np.stack([e.global_emb for e in entries])).float()
    if any(e.patches is None for e in entries):
        return ImageFeatures(glob, None)
    return ImageFeatures(
        glob, torch.from_numpy(np.stack([e.patches for e in entries if e.patches is not None])).float()
    )


def predict(runtime: Runtime, request: PredictRequest) -> PredictResult:
    """Tag a batch of images with the request's vocabulary.

    Args:
        runtime: The worker's models, cache and downloader.
        request: The validated request.

    Returns:
        Calibrated scores per image and label, seen marks, thresholds, per-image failures.
    """
    model = runtime.model_for(request.project, request.model_version)
    labels = list(request.labels)
    scores: dict[int, list[float]] = {}

    def consume(indices: list[int], features: ImageFeatures) -> None:
        probs = np.round(model.scorer.probabilities(features, labels), SCORE_DECIMALS)
        for i, row in zip(indices, probs.tolist(), strict=True):
            scores[i] = row

    slots = collect_features(runtime, model, request.images, consume)
    items = []
    for slot in slots:
        row = scores.get(slot.index)
        failure = slot.failure
        if row is None and failure is None:
            failure = ImageFailure(reason="error", message="No features were computed for this image.")
        items.append(
            ImageScores(
                key=slot.ref.key,
                task_id=slot.ref.task_id,
                scores=None if failure is not None else row,
                error=failure,
            )
        )
    thresholds = model.tagger.calibrator.thresholds(labels)
    _count_images(PREDICT, slots)
    logger.info(
        "predict %s: %d images (%d cached, %d failed), %d labels, version %s",
        request.request_id or "-",
        len(slots),
        sum(s.cached for s in slots),
        sum(s.failure is not None for s in slots),
        len(labels),
        model.version,
    )
    return PredictResult(
        model_version=model.version,
        labels=labels,
        seen=model.tagger.model.is_seen(labels),
        thresholds=[round(float(t), SCORE_DECIMALS) for t in thresholds],
        items=items,
        calibration=model.tagger.calibrator.method,
    )


def embed(runtime: Runtime, request: EmbedRequest) -> EmbedResult:
    """Fill the feature cache for a batch (images already cached are not recomputed)."""
    model = runtime.model_for(request.project, request.model_version)
    slots = collect_features(runtime, model, request.images, None)
    _count_images(EMBED, slots)
    items = [ImageStatus(key=s.ref.key, content_hash=s.digest, cached=s.cached, error=s.failure) for s in slots]
    return EmbedResult(model_version=model.version, backbone_version=model.tower_version, items=items)


def _count_images(task: str, slots: Sequence[_Slot]) -> None:
    # Prometheus counters (state/metrics.py): cache hits, model encodings, failures by reason.
    failures = [s.failure.reason for s in slots if s.failure is not None]
    cached = sum(1 for s in slots if s.cached and s.failure is None)
    worker_metrics().record_images(task, cached=cached, computed=len(slots) - cached - len(failures), failures=failures)


def score_pool(runtime: Runtime, request: ScorePoolRequest) -> ScorePoolResult:
    """Score an unlabeled pool and choose ``k`` images with a selection strategy.

    Each chunk of features (from the cache, or encoded and cached) is scored over the request's
    vocabulary and reduced at once to the few numbers per image a strategy needs
    (:class:`~assistant.selection.PoolBuilder`), so memory grows with the pool, not with the
    vocabulary. The labeled images' embeddings are collected the same way for the diversity
    strategies.

    Raises:
        RequestError: An unknown strategy or novel label, or a pool with no usable image.
    """
    model = runtime.model_for(request.project, request.model_version)
    labels = list(request.labels)
    seen = model.tagger.model.is_seen(labels)
    novel = request.novel_labels or [label for label, s in zip(labels, seen, strict=True) if not s]
    try:
        strategy = create_strategy(request.strategy, seed=request.seed)
        calibrator = model.tagger.calibrator
        builder = _LazyPool(
            len(request.images),
            labels,
            calibrator.thresholds(labels),
            novel,
            not calibrator.is_prior,
            request.break_even,
        )
    except AssistantError as exc:
        raise RequestError(exc.what, why=exc.why, fix=exc.fix) from None
    keep = strategy.needs_embeddings

    def consume(indices: list[int], features: ImageFeatures) -> None:
        probs = model.scorer.probabilities(features, labels)
        builder.add(indices, probs, features.global_emb.numpy() if keep else None)

    slots = collect_features(runtime, model, request.images, consume)
    labeled = _labeled_embeddings(runtime, model, request.labeled) if keep and request.labeled else None
    pool = builder.build(labeled)
    if pool is None or pool.n_valid == 0:
        raise RequestError(
            f"none of the {len(request.images)} pool images could be scored",
            why="; ".join(sorted({s.failure.reason for s in slots if s.failure is not None})) or "no features",
            fix="check that the images are reachable by the workers (see the per-image errors of a predict task)",
        )
    selection = strategy.select(pool, request.k)
    chosen = [
        PoolScore(
            key=request.images[row].key,
            task_id=request.images[row].task_id,
            rank=rank,
            score=round(float(score), SCORE_DECIMALS),
            reason=reason,
        )
        for rank, (row, score, reason) in enumerate(
            zip(selection.indices.tolist(), selection.scores.tolist(), selection.reasons, strict=True), start=1
        )
    ]
    failed = [ImageScores(key=s.ref.key, task_id=s.ref.task_id, error=s.failure) for s in slots if s.failure]
    logger.info(
        "score_pool %s: %s chose %d of %d images (%d cached, %d failed), version %s",
        request.request_id or "-",
        strategy.name,
        len(chosen),
        len(slots),
        sum(s.cached for s in slots),
        len(failed),
        model.version,
    )
    return ScorePoolResult(
        model_version=model.version,
        strategy=strategy.name,
        chosen=chosen,
        failed=failed,
        pool_size=len(slots),
        cached=sum(s.cached for s in slots),
        novel_labels=list(pool.novel_labels),
    )


class _LazyPool:
    """A :class:`PoolBuilder` created with the first chunk (its embedding width is known then)."""

    def __init__(
        self,
        n: int,
        labels: list[str],
        thresholds: NDArray[Any],
        novel: list[str],
        calibrated: bool,
        break_even: float | None = None,
    ) -> None:
        self.n, self.labels, self.thresholds, self.novel = n, labels, thresholds, novel
        self.break_even = break_even
        # False under a prior (Calibrator.default() or a backbone's calibration.json): no
        # annotation of this project has calibrated the thresholds yet.
        self.calibrated = calibrated
        self.builder: PoolBuilder | None = None
        # Fails fast on novel labels outside the vocabulary, before any image is fetched.
        PoolBuilder(0, labels, thresholds, novel_labels=novel)

    def add(self, indices: list[int], probs: NDArray[Any], embeddings: NDArray[Any] | None) -> None:
        if self.builder is None:
            dim = None if embeddings is None else int(embeddings.shape[1])
            self.builder = PoolBuilder(
                self.n,
                self.labels,
                self.thresholds,
                novel_labels=self.novel,
                dim=dim,
                calibrated=self.calibrated,
                break_even=self.break_even,
            )
        # Float16, the cache's own precision: half the memory of a 10⁶-image pool.
        self.builder.add(indices, probs, None if embeddings is None else embeddings.astype(np.float16))

    def build(self, labeled: NDArray[Any] | None) -> SelectionPool | None:
        return None if self.builder is None else self.builder.build(labeled)


def _labeled_embeddings(runtime: Runtime, model: LoadedVersion, refs: Sequence[ImageRef]) -> NDArray[Any] | None:
    found: dict[int, NDArray[Any]] = {}

    def consume(indices: list[int], features: ImageFeatures) -> None:
        glob = features.global_emb.to(torch.float16).numpy()
        for i, row in zip(indices, glob, strict=True):
            found[i] = row

    collect_features(runtime, model, refs, consume)
    return np.stack([found[i] for i in sorted(found)]) if found else None


def collect_features(
    runtime: Runtime, model: LoadedVersion, refs: Sequence[ImageRef], consume: Consumer | None
) -> list[_Slot]:
    """Get every image's features (cache or model) and hand them to ``consume`` in chunks.

    Args:
        runtime: The worker's resources.
        model: The model version to encode with.
        refs: The images, in request order.
        consume: Called with request indices and their float32 features (from float16); None
            when only the cache is to be filled (cache hits are then not even read).

    Returns:
        One slot per image, in order, with its content hash, whether it was cached, and its
        failure if any.
    """
    fetcher, cache = runtime.fetcher, runtime.cache
    slots = [_Slot(i, ref, fetcher.source_info(ref)) for i, ref in enumerate(refs)]
    known = cache.lookup_sources([s.source for s in slots if s.source is not None])
    for slot in slots:
        if slot.source is not None:
            slot.digest = known.get(slot.source.key)
    present = cache.contains_many([s.digest for s in slots if s.digest], model.tower_version)
    hits = [s for s in slots if s.digest in present]
    to_fetch = [s for s in slots if s.digest not in present]
    for slot in hits:
        slot.cached = True
    fetched = _Fetching(runtime, model, to_fetch)
    try:
        if consume is not None:
            # Cache reads run while the media threads download the misses.
            lost = _score_cached(runtime, model, hits, consume)
            fetched.add(lost)
            to_fetch.extend(lost)
        _encode_fetched(runtime, model, fetched.results(), consume)
    finally:
        fetched.cancel()
    # Only locations just downloaded: those found through the index are already recorded.
    fetched_now = [(s.source, s.digest) for s in to_fetch if s.source and s.digest and not s.failure]
    cache.record_sources(fetched_now)
    return slots


class _Stacker:
    """Converts float16 cache entries into float32 features, reusing one buffer across chunks.

    Re-tagging 10,000 cached ViT-B/32 images moves 0.5 GB of float16 patches: one torch copy per
    entry straight into the reused buffer takes 0.27 s per 10,000 entries here, against 0.5 s for
    ``np.stack`` then one conversion, and a fresh tensor per chunk would add page faults. The
    features returned live until the next call, so the consumer must be done with them by then
    (it is: scoring is synchronous).
    """

    def __init__(self) -> None:
        self._full: torch.Tensor | None = None

    def features(self, entries: Sequence[CachedFeatures]) -> ImageFeatures:
        shapes = {None if e.patches is None else e.patches.shape for e in entries}
        writable = all(e.patches is not None and e.patches.flags.writeable for e in entries)
        if len(shapes) != 1 or None in shapes or not writable:
            return to_image_features(entries)
        n, (tokens, dim) = len(entries), next(iter(shapes))  # type: ignore[misc]
        if self._full is None or self._full.shape[0] < n or self._full.shape[1:] != (tokens, dim):
            self._full = torch.empty((max(n, SCORE_CHUNK), tokens, dim), dtype=torch.float32)
        patches = self._full[:n]
        for i, entry in enumerate(entries):
            patches[i].copy_(torch.from_numpy(entry.patches))  # torch converts float16 ~5x faster than numpy
        glob = torch.from_numpy(np.stack([e.global_emb for e in entries])).float()
        return ImageFeatures(glob, patches)


def _score_cached(runtime: Runtime, model: LoadedVersion, hits: list[_Slot], consume: Consumer) -> list[_Slot]:
    chunks = [hits[start : start + SCORE_CHUNK] for start in range(0, len(hits), SCORE_CHUNK)]
    # Reader threads load the next chunks (file reads and float16 conversion release the GIL)
    # while this thread scores the current one; one more buffer than chunks in flight.
    stackers = [_Stacker() for _ in range(READ_AHEAD + 1)]

    def load(i: int) -> tuple[list[_Slot], list[_Slot], ImageFeatures | None]:
        chunk = chunks[i]
        found = runtime.cache.get_many([s.digest for s in chunk if s.digest], model.tower_version)
        ready = [s for s in chunk if s.digest in found]
        # Evicted or damaged since the index said present: fetched like any miss.
        missing = [s for s in chunk if s.digest not in found]
        stacker = stackers[i % len(stackers)]
        feats = stacker.features([found[s.digest] for s in ready if s.digest]) if ready else None
        return ready, missing, feats

    lost: list[_Slot] = []
    reader = runtime.cache_reader
    pending = [reader.submit(load, i) for i in range(min(READ_AHEAD, len(chunks)))]
    try:
        for i in range(len(chunks)):
            ready, missing, feats = pending.pop(0).result()
            if i + READ_AHEAD < len(chunks):
                pending.append(reader.submit(load, i + READ_AHEAD))
            lost.extend(missing)
            if feats is not None:
                consume([s.index for s in ready], feats)
    finally:
        # On an error (or a soft time limit) no chunk may still be loading into a buffer.
        for future in pending:
            if not future.cancel():
                future.exception()
    for slot in lost:
        slot.cached = False
    return lost


class _Fetching:
    """Downloads on the media threads, at most ``window`` ahead of the consumer (bounded memory)."""

    def __init__(self, runtime: Runtime, model: LoadedVersion, slots: list[_Slot]) -> None:
        self.runtime, self.model = runtime, model
        self.queue = list(slots)
        self.pending: list[tuple[_Slot, Future[_Prepared]]] = []
        # Enough decoded images for two model batches, and every thread busy.
        self.window = 2 * model.tagger.batch_size + runtime.settings.media_concurrency
        self._fill()

    def add(self, slots: list[_Slot]) -> None:
        self.queue.extend(slots)
        self._fill()

    def _fill(self) -> None:
        pool = self.runtime.fetcher.pool
        while self.queue and len(self.pending) < self.window:
            slot = self.queue.pop(0)
            self.pending.append((slot, pool.submit(_prepare, self.runtime, self.model, slot.ref)))

    def results(self) -> Iterator[tuple[_Slot, _Prepared | None]]:
        while self.pending:
            slot, future = self.pending.pop(0)
            self._fill()
            try:
                yield slot, future.result()
            except MediaError as exc:
                slot.failure = ImageFailure(reason=exc.reason, message=exc.message)
                yield slot, None
            except Exception as exc:  # a bug must cost one image, not the batch
                logger.exception("unexpected failure on image %s", slot.ref.key)
                slot.failure = ImageFailure(reason="error", message=f"Unexpected error: {type(exc).__name__}: {exc}.")
                yield slot, None

    def cancel(self) -> None:
        for _, future in self.pending:
            future.cancel()
        self.pending.clear()
        self.queue.clear()


def _prepare(runtime: Runtime, model: LoadedVersion, ref: ImageRef) -> _Prepared:
    # Runs on a media thread: download, hash, then decode only when the content is new.
    data = runtime.fetcher.fetch(ref)
    digest = hashlib.sha256(data).hexdigest()
    cached = runtime.cache.get_many([digest], model.tower_version).get(digest)
    if cached is not None:
        return _Prepared(digest, None, cached)
    image = decode_image(data, max_pixels=runtime.settings.media_max_pixels)
    return _Prepared(digest, model.tagger.preprocess([image])[0], None)


def _encode_fetched(
    runtime: Runtime,
    model: LoadedVersion,
    results: Iterator[tuple[_Slot, _Prepared | None]],
    consume: Consumer | None,
) -> None:
    batch: list[tuple[_Slot, torch.Tensor]] = []
    for slot, prepared in results:
        if prepared is None:
            continue
        slot.digest = prepared.digest
        if prepared.cached is not None:
            slot.cached = True
            if consume is not None:
                consume([slot.index], to_image_features([prepared.cached]))
            continue
        assert prepared.pixels is not None  # internal invariant: new content comes with pixels
        batch.append((slot, prepared.pixels))
        if len(batch) >= model.tagger.batch_size:
            _encode_batch(runtime, model, batch, consume)
            batch = []
    if batch:
        _encode_batch(runtime, model, batch, consume)


def _encode_batch(
    runtime: Runtime, model: LoadedVersion, batch: list[tuple[_Slot, torch.Tensor]], consume: Consumer | None
) -> None:
    features = encode_adaptive(model, torch.stack([pixels for _, pixels in batch]))
    entries = from_image_features(features)
    keyed = [(slot.digest, entry) for (slot, _), entry in zip(batch, entries, strict=True) if slot.digest]
    runtime.cache.put_many(keyed, model.tower_version)
    if consume is not None:
        consume([slot.index for slot, _ in batch], to_image_features(entries))


def encode_adaptive(model: LoadedVersion, pixels: torch.Tensor) -> ImageFeatures:
    """Encode, halving the device batch on CUDA out-of-memory (kept for later batches)."""
    tagger = model.tagger
    while True:
        try:
            return tagger.encode(pixels)
        except torch.cuda.OutOfMemoryError:
            if tagger.batch_size <= 1:
                raise
            torch.cuda.empty_cache()
            tagger.batch_size = max(1, tagger.batch_size // 2)
            logger.warning("CUDA out of memory: device batch size lowered to %d", tagger.batch_size)
