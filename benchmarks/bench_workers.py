"""Throughput of tagging through the Celery workers, against baselines measured in the same run.

Three comparisons (the targets are the issue's; nothing here is a timed test):

1. End-to-end through Celery (submit to result, a real ``assistant worker`` on Redis, cold
   feature cache) vs the bare model in-process on the same images. Target: >= 85% of bare.
2. The same vs the naive approach of the Label Studio example backends: one request per image,
   the model loaded for every request. Target: >= 5x. The naive side runs in-process on a few
   images (``--naive-images``) and its per-image time is extrapolated; leaving out Celery's
   per-task overhead only flatters it.
3. Re-tagging 10,000 cached images (features and source index filled beforehand, as a previous
   run leaves them) with one new label: worker-side time of the pipeline, and submit-to-result
   through Celery. Target: < 1 s.

Random ViT-B-32 weights are fine for speed (the checkpoint is saved once, ~600 MB, under
``--workdir``). Images: COCO128 photos (and their mirror images, so every image is distinct) when
../shared/datasets is present, else synthetic JPEGs. Run:

    .venv/bin/python benchmarks/bench_workers.py            # several minutes on 2 CPU cores
    .venv/bin/python benchmarks/bench_workers.py --quick    # smaller sizes
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from assistant.checkpoint import load_model, save_checkpoint  # noqa: E402
from assistant.inference import Tagger  # noqa: E402
from state.contracts import MAX_IMAGES, PREDICT, ImageRef, PredictRequest, PredictResult  # noqa: E402
from state.settings import Settings  # noqa: E402
from workers import pipeline  # noqa: E402
from workers.celery_app import make_celery  # noqa: E402
from workers.feature_cache import CachedFeatures  # noqa: E402
from workers.media import SourceInfo  # noqa: E402
from workers.runtime import Runtime  # noqa: E402

console = Console()
COCO = REPO_ROOT.parent / "shared" / "datasets" / "coco128" / "images"
REDIS_URL = "redis://127.0.0.1:6379/13"
VERSION = "bench-vit-b-32"


def _images(directory: Path, n: int, variant: int = 0) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    photos = sorted(COCO.rglob("*.jpg")) if COCO.is_dir() else []
    rng = np.random.default_rng(variant)
    paths = []
    for i in range(n):
        path = directory / f"{i:05d}.jpg"
        if photos:
            image = Image.open(photos[i % len(photos)]).convert("RGB")
            # Mirror and shift later rounds so that every file has distinct content (no cache hits).
            if (i // len(photos)) % 2:
                image = ImageOps.mirror(image)
            image = image.crop((2 * variant + i // (2 * len(photos)), 0, image.width, image.height))
        else:
            image = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))  # distinct per call
        image.save(path, quality=90)
        paths.append(path)
    return paths


def _settings(home: Path, checkpoint: Path, roots: list[Path], prefix: str, **kw: Any) -> Settings:
    return Settings(
        home=home,
        base_model=str(checkpoint),
        device="cpu",
        broker_url=REDIS_URL,
        redis_key_prefix=prefix,
        media_local_roots=roots,
        label_studio_url="http://127.0.0.1:9",
        **kw,
    )


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSISTANT_", "LABEL_STUDIO_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        ASSISTANT_HOME=str(settings.home),
        ASSISTANT_BASE_MODEL=settings.base_model,
        ASSISTANT_DEVICE="cpu",
        ASSISTANT_BROKER_URL=settings.broker_url,
        ASSISTANT_REDIS_KEY_PREFIX=settings.redis_key_prefix,
        ASSISTANT_MEDIA_LOCAL_ROOTS=json.dumps([str(r) for r in settings.media_local_roots]),
        ASSISTANT_LABEL_STUDIO_URL=settings.label_studio_url,
    )
    return env


@contextlib.contextmanager
def _worker(settings: Settings, log: Path) -> Iterator[None]:
    cmd = [sys.executable, "-c", "from cli.main import main; main()", "worker", "-Q", "predict", "-l", "WARNING"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=_env(settings), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _through_celery(
    app: Any, requests: list[PredictRequest], timeout: float = 1800
) -> tuple[float, list[PredictResult]]:
    start = time.perf_counter()
    pending = [app.send_task(PREDICT, kwargs=r.model_dump(mode="json")) for r in requests]
    results = [PredictResult.model_validate(p.get(timeout=timeout)) for p in pending]
    return time.perf_counter() - start, results


def _split(refs: list[ImageRef], labels: list[str], size: int) -> list[PredictRequest]:
    return [PredictRequest(labels=labels, images=refs[i : i + size]) for i in range(0, len(refs), size)]


def bench_bare(checkpoint: Path, paths: list[Path], labels: list[str]) -> float:
    """Seconds for the model in-process: decode, preprocess, encode, score (model already loaded)."""
    tagger = Tagger(load_model(checkpoint), device="cpu")
    tagger.probabilities(tagger.features([Image.open(paths[0]).convert("RGB")]), labels)  # warm-up
    start = time.perf_counter()
    for i in range(0, len(paths), tagger.batch_size):
        images = [ImageOps.exif_transpose(Image.open(p)).convert("RGB") for p in paths[i : i + tagger.batch_size]]
        tagger.probabilities(tagger.features(images), labels)
    return time.perf_counter() - start


def bench_naive(checkpoint: Path, paths: list[Path], labels: list[str]) -> float:
    """Seconds per image when every request loads the model (the example backends' pattern)."""
    start = time.perf_counter()
    for path in paths:
        tagger = Tagger(load_model(checkpoint), device="cpu")
        tagger.probabilities(tagger.features([Image.open(path).convert("RGB")]), labels)
        del tagger
    return (time.perf_counter() - start) / len(paths)


def fill_cache(runtime: Runtime, n: int) -> list[ImageRef]:
    """Features and source-index entries for ``n`` images, as a previous tagging run leaves them."""
    model = runtime.model(VERSION)
    probe = model.tagger.features([Image.new("RGB", (224, 224))])
    dim = probe.global_emb.shape[1]
    n_patches = probe.patches.shape[1] if probe.patches is not None else 0
    rng = np.random.default_rng(0)
    # 64 distinct feature sets reused: what is timed is reading and scoring, not their values.
    pool = [
        CachedFeatures(
            rng.standard_normal(dim).astype(np.float16), rng.standard_normal((n_patches, dim)).astype(np.float16)
        )
        for _ in range(64)
    ]
    digests = [uuid.uuid5(uuid.NAMESPACE_URL, f"bench-{i}").hex * 2 for i in range(n)]
    # Segments of 16, as a CPU worker writes them (its batch size).
    for start in range(0, n, 16):
        items = [(digests[i], pool[i % len(pool)]) for i in range(start, min(n, start + 16))]
        runtime.cache.put_many(items, model.tower_version)
    ttl = float(runtime.settings.media_source_ttl_s)
    urls = [f"http://images.bench.invalid/{i:05d}.jpg" for i in range(n)]
    runtime.cache.record_sources([(SourceInfo(u, None, ttl), d) for u, d in zip(urls, digests, strict=True)])
    return [ImageRef(key=str(i), url=u) for i, u in enumerate(urls)]


def bench_retag_in_process(
    runtime: Runtime, refs: list[ImageRef], labels: list[str], repeats: int
) -> dict[str, list[float]]:
    """Worker-side seconds to re-tag cached images: one new label alone, and the vocabulary plus one."""
    for request in _split(refs, labels, MAX_IMAGES):  # warm: old label embeddings, page cache
        pipeline.predict(runtime, request)
    out: dict[str, list[float]] = {}
    for name, vocab in (("one new label", ["a brand new label"]), ("vocabulary + 1", [*labels, "another new label"])):
        out[name] = []
        for _ in range(repeats):
            start = time.perf_counter()
            results = [pipeline.predict(runtime, r) for r in _split(refs, vocab, MAX_IMAGES)]
            out[name].append(time.perf_counter() - start)
            failed = sum(item.error is not None for res in results for item in res.items)
            if failed:
                raise RuntimeError(f"{failed} images failed while re-tagging: the cache was not used")
    return out


def _spread(samples: list[float]) -> str:
    return f"{statistics.median(samples):.2f} s (min {min(samples):.2f}, n={len(samples)})"


def throughput(
    args: argparse.Namespace, work: Path, checkpoint: Path, prefix: str, labels: list[str], sets: list[list[Path]]
) -> tuple[list[float], list[float]]:
    """Seconds per image set, bare in-process and through Celery, interleaved so that both sides
    see the same machine load (these machines are shared)."""
    bare_s: list[float] = []
    celery_s: list[float] = []
    if args.skip_celery:
        for paths in sets:
            bare_s.append(bench_bare(checkpoint, paths, labels))
        return bare_s, celery_s
    settings = _settings(work / "home-celery", checkpoint, [work], prefix)
    app = make_celery(settings, include=[])
    with _worker(settings, work / "worker.log"):
        console.print("through Celery: starting a worker, warming it up ...")
        # Warm-up on an image outside the timed sets: each timed set starts with a cold cache.
        warm_path = work / "warm-up.jpg"
        Image.new("RGB", (320, 240), (90, 120, 30)).save(warm_path)
        _through_celery(app, [PredictRequest(labels=labels, images=[ImageRef(key="w", url=str(warm_path))])], 600)
        for r, paths in enumerate(sets):
            console.print(f"round {r + 1}/{len(sets)}: bare model in-process and through Celery ...")
            refs = [ImageRef(key=p.stem, url=str(p)) for p in paths]
            # Alternate which side goes first, so that a load spike does not always hit the same side.
            for side in ("bare", "celery") if r % 2 == 0 else ("celery", "bare"):
                if side == "bare":
                    bare_s.append(bench_bare(checkpoint, paths, labels))
                    continue
                seconds, results = _through_celery(app, _split(refs, labels, args.per_message))
                failed = sum(i.error is not None for res in results for i in res.items)
                if failed:
                    raise RuntimeError(f"{failed} images failed through Celery; see {work / 'worker.log'}")
                celery_s.append(seconds)
    return bare_s, celery_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=256, help="images for the throughput comparison")
    parser.add_argument("--per-message", type=int, default=64, help="images per Celery message")
    parser.add_argument("--naive-images", type=int, default=6, help="images the naive approach is timed on")
    parser.add_argument("--retag-images", type=int, default=10_000)
    parser.add_argument("--labels", type=int, default=20, help="vocabulary size")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp dir, removed)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of bare vs Celery")
    parser.add_argument("--skip-celery", action="store_true", help="in-process measurements only (no Redis)")
    parser.add_argument("--quick", action="store_true", help="64 images, 3 naive, 2,000 re-tagged, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.images, args.naive_images, args.retag_images, args.per_message, args.repeats = 64, 3, 2000, 32, 1

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-workers-"))
    prefix = f"bench-workers-{uuid.uuid4().hex[:8]}:"
    labels = [f"label number {i}" for i in range(args.labels)]
    rows: list[tuple[str, str, str, str]] = []
    try:
        checkpoint = work / "checkpoint"
        if not checkpoint.exists():
            console.print(f"saving a random {args.arch} checkpoint to {checkpoint} ...")
            torch.manual_seed(0)
            save_checkpoint(load_model(args.arch, allow_random=True), checkpoint, version=VERSION)
        sets = [_images(work / f"images-{r}", args.images, variant=r) for r in range(args.repeats)]
        console.print(f"naive: model loaded per request, {args.naive_images} images ...")
        naive = bench_naive(checkpoint, sets[0][: args.naive_images], labels)
        bare_s, celery_s = throughput(args, work, checkpoint, prefix, labels, sets)
        n = args.images
        rows.append(
            ("bare model, in-process", _spread(bare_s), f"{n / statistics.median(bare_s):.1f} img/s", "baseline")
        )
        rows.append(
            (
                "naive: one request per image, model loaded each time",
                f"{naive:.2f} s/img",
                f"{1 / naive:.2f} img/s",
                f"{naive * n / statistics.median(bare_s):.1f}x slower than bare",
            )
        )
        if celery_s:
            # Ratios per interleaved pair (the same load on both sides), then their median.
            ratio = statistics.median(b / c for b, c in zip(bare_s, celery_s, strict=True))
            rows.append(
                (
                    "through Celery (submit to result, cold cache)",
                    _spread(celery_s),
                    f"{n / statistics.median(celery_s):.1f} img/s",
                    f"{ratio:.0%} of bare (target >= 85%); {naive * n / statistics.median(celery_s):.1f}x naive "
                    "(target >= 5x)",
                )
            )

        console.print(f"re-tagging {args.retag_images} cached images ...")
        retag_settings = _settings(work / "home-retag", checkpoint, [], prefix)
        runtime = Runtime(retag_settings)
        try:
            retag_refs = fill_cache(runtime, args.retag_images)
            for name, samples in bench_retag_in_process(runtime, retag_refs, labels, args.repeats + 1).items():
                rows.append(
                    (
                        f"re-tag {args.retag_images} cached, {name} (worker side)",
                        _spread(samples),
                        f"{args.retag_images / statistics.median(samples):,.0f} img/s",
                        "target < 1 s",
                    )
                )
        finally:
            runtime.close()
        if not args.skip_celery:
            app = make_celery(retag_settings, include=[])
            with _worker(retag_settings, work / "worker-retag.log"):
                _through_celery(app, _split(retag_refs, labels, MAX_IMAGES), timeout=900)  # warm-up
                new_label = _split(retag_refs, ["a brand new label"], MAX_IMAGES)
                samples = [_through_celery(app, new_label)[0] for _ in range(args.repeats + 1)]
            rows.append(
                (
                    f"re-tag {args.retag_images} cached, one new label (through Celery)",
                    _spread(samples),
                    f"{args.retag_images / statistics.median(samples):,.0f} img/s",
                    "target < 1 s",
                )
            )
    finally:
        _cleanup_redis(prefix)
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    table = Table(
        title=f"Workers benchmark ({args.arch}, random weights, CPU, {args.labels} labels, "
        f"{torch.get_num_threads()} torch threads)"
    )
    for column in ("measurement", "time", "throughput", "ratio / target"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _cleanup_redis(prefix: str) -> None:
    import redis

    with contextlib.suppress(redis.RedisError):
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            client.delete(key)
        client.close()


if __name__ == "__main__":
    main()
