"""What a worker process keeps between tasks: models per version, the feature cache, the downloader.

Celery's "Instantiation" pattern (tasks.rst): the expensive resources hang off the task base
class, :class:`ModelTask`, and are created lazily by the first task that needs them. Never at
import and never in ``worker_process_init`` (4 s limit), so with the prefork pool CUDA is first
touched in the child, after the fork (docs/workers.md, "torch and prefork": torch work in the
parent deadlocks the children).

Every task re-reads the project's ``current`` pointer (one small file), so a promotion reaches
the workers on their next task without a restart; versions stay loaded in a small LRU because
projects may sit on different versions.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from celery import Celery, Task

from assistant.checkpoint import load_model
from assistant.inference import Tagger
from state.registry import Project, Registry
from state.settings import Settings
from workers.celery_app import settings_of
from workers.feature_cache import FeatureCache
from workers.media import MediaFetcher

__all__ = ["SCORE_CHUNK", "LoadedVersion", "ModelTask", "Runtime", "runtime_for"]

logger = logging.getLogger(__name__)

# Images scored per call from features: 256 ViT-B/32 images are 26 MB in float32, under glibc's
# 32 MB mmap threshold, so chunks reuse heap memory instead of page-faulting a fresh mapping each
# time (a fresh 1 GB allocation measured ~3 s on these machines).
SCORE_CHUNK = 256
# Threads reading cached features ahead of scoring (workers/pipeline.py READ_AHEAD).
CACHE_READERS = 1


@dataclass(frozen=True)
class LoadedVersion:
    """A model version ready to tag.

    Attributes:
        version: The registry version id (what results report as ``model_version``).
        tagger: The model with its calibrator, on the worker's device; encodes images in batches
            of the device batch size.
        scorer: The same model and calibrator, scoring features in chunks of
            :data:`SCORE_CHUNK` images.
        tower_version: The image tower's digest: the feature-cache key.
    """

    version: str
    tagger: Tagger
    scorer: Tagger
    tower_version: str


class Runtime:
    """The per-process resources of a worker (also used directly by tests and the CLI).

    Args:
        settings: Device, batch size, registry, cache and media settings.
        registry: Defaults to the registry at ``settings.models_dir``.
        fetcher: Defaults to a :class:`MediaFetcher` built from settings (created on first use).
        cache: Defaults to the feature cache at ``settings.feature_cache_dir``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        registry: Registry | None = None,
        fetcher: MediaFetcher | None = None,
        cache: FeatureCache | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or Registry(settings.models_dir, settings.base_model)
        self.cache = cache or FeatureCache(settings.feature_cache_dir, settings.feature_cache_max_bytes)
        self._fetcher = fetcher
        self._reader: ThreadPoolExecutor | None = None
        self._models: OrderedDict[str, LoadedVersion] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def fetcher(self) -> MediaFetcher:
        """The image downloader (its threads start on first use)."""
        with self._lock:
            if self._fetcher is None:
                self._fetcher = MediaFetcher(self.settings)
            return self._fetcher

    @property
    def cache_reader(self) -> ThreadPoolExecutor:
        """Threads that read cached features ahead of scoring (they keep their index connections)."""
        with self._lock:
            if self._reader is None:
                self._reader = ThreadPoolExecutor(CACHE_READERS, thread_name_prefix="cache-reader")
            return self._reader

    def resolve_version(self, project: Project, version: str | None = None) -> str:
        """``version`` when given, else the project's current version (re-read every call)."""
        return version or self.registry.current(project).version

    def model_for(self, project: Project, version: str | None = None) -> LoadedVersion:
        """The model serving ``project`` (or the explicit ``version``), loaded if needed."""
        return self.model(self.resolve_version(project, version))

    def model(self, version: str) -> LoadedVersion:
        """A version's model from the LRU, loading it (and evicting the oldest) when absent."""
        with self._lock:
            found = self._models.get(version)
            if found is not None:
                self._models.move_to_end(version)
                return found
            loaded = self._load(version)
            self._models[version] = loaded
            while len(self._models) > self.settings.model_cache_size:
                old, _ = self._models.popitem(last=False)
                logger.info("unloaded model version %s (LRU of %d)", old, self.settings.model_cache_size)
            if loaded.tagger.device.type == "cuda":
                torch.cuda.empty_cache()
            return loaded

    def _load(self, version: str) -> LoadedVersion:
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        record = self.registry.get(version)
        started = time.perf_counter()
        # Loaded on the CPU, then moved by the Tagger, which resolves "auto" to CUDA when present.
        loaded = load_model(record.checkpoint, device="cpu")
        tagger = Tagger(loaded, device=self.settings.device, batch_size=self.settings.batch_size)
        # Scoring features in the encoder's batches (16 on a CPU) is dominated by per-call overhead:
        # 1.7 s against 0.28 s per 2,000 cached ViT-B/32 images in chunks of 256 (measured here).
        scorer = Tagger(loaded, device=tagger.device, batch_size=SCORE_CHUNK)
        # The sidecar's digest was computed from these very weights (their sha256 is checked on
        # load); hashing a ViT-B image tower again would cost ~0.5 s per load.
        tower = record.image_tower_version or tagger.model.image_tower_version()
        logger.info(
            "loaded model version %s on %s (batch %d, tower %s) in %.1f s",
            version,
            tagger.device,
            tagger.batch_size,
            tower,
            time.perf_counter() - started,
        )
        return LoadedVersion(version, tagger, scorer, tower)

    def loaded_versions(self) -> list[str]:
        """Versions in memory, least recently used first."""
        with self._lock:
            return list(self._models)

    def close(self) -> None:
        """Release the downloader and the cache connection."""
        with self._lock:
            if self._fetcher is not None:
                self._fetcher.close()
                self._fetcher = None
            if self._reader is not None:
                self._reader.shutdown(wait=True, cancel_futures=True)
                self._reader = None
            self._models.clear()
        self.cache.close()


# One runtime per (app, process): tasks of the same app share models and the cache.
_runtimes: weakref.WeakKeyDictionary[Celery, tuple[int, Runtime]] = weakref.WeakKeyDictionary()
_runtimes_lock = threading.Lock()


def runtime_for(app: Celery, settings: Settings | None = None) -> Runtime:
    """The runtime of ``app`` in this process, created on first use.

    Args:
        app: The Celery app whose settings (:func:`workers.celery_app.settings_of`) apply.
        settings: Use these instead (tests).
    """
    with _runtimes_lock:
        found = _runtimes.get(app)
        if found is not None and found[0] == os.getpid():
            return found[1]
        runtime = Runtime(settings or settings_of(app))
        _runtimes[app] = (os.getpid(), runtime)
        return runtime


class ModelTask(Task):  # type: ignore[misc]  # celery ships no type information
    """Base class of the model tasks: ``self.runtime`` is the process's lazily built runtime."""

    abstract = True

    @property
    def runtime(self) -> Runtime:
        """The process-wide runtime of this task's app."""
        return runtime_for(self.app)
