"""Speed of MKT tagging and label embedding against plain open_clip zero-shot code.

Prints ratios against a baseline measured in the same run (never absolute targets in tests):

- images/s of tagging at batch 1, 8, 32: our two-stream head (class token + top-k projected
  patches, both scored against every label) vs plain open_clip zero-shot (one embedding per image
  and a matrix product). Target: at most 10% slower at batch 32.
- label-embedding time for 1,000 and 10,000 labels: our prompt learner (one tuned template,
  padding after EOT cut) vs open_clip's plain ``encode_text`` on the same template.

Random ViT-B-32 weights are fine for speed. Run: ``.venv/bin/python benchmarks/bench_head.py``
(``--quick`` for a short run). Interleaved repetitions keep both sides under the same load.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from assistant.checkpoint import load_model
from assistant.head import two_stream_scores

console = Console()


def _time(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls (one warm-up call first)."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--labels", type=int, default=80, help="vocabulary size while tagging")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--label-counts", default="1000,10000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="batches 1,8; 1,000 labels; 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.label_counts, args.repeats = "1,8", "1000", 3

    torch.manual_seed(0)
    loaded = load_model(args.arch, allow_random=True, device="cpu")
    model, backbone = loaded.model, loaded.model.backbone
    clip = backbone.model  # the plain open_clip model, for the baseline
    names = [f"label number {i}" for i in range(max(args.labels, *map(int, args.label_counts.split(","))))]
    vocab = names[: args.labels]
    with torch.inference_mode():
        ours_emb = model.label_embeddings(vocab)
        plain_emb = F.normalize(clip.encode_text(backbone.tokenize([f"There is a {n} in the scene." for n in vocab])))

    table = Table(title=f"tagging, {args.arch}, CPU, {args.labels} labels (median of {args.repeats})")
    for col in ("batch", "plain open_clip img/s", "MKT two-stream img/s", "MKT time / plain time"):
        table.add_column(col, justify="right")
    for batch in map(int, args.batches.split(",")):
        pixels = torch.randn(batch, 3, backbone.image_size, backbone.image_size)

        def plain(pixels: torch.Tensor = pixels) -> torch.Tensor:
            with torch.inference_mode():
                return F.normalize(clip.encode_image(pixels)) @ plain_emb.T

        def ours(pixels: torch.Tensor = pixels) -> torch.Tensor:
            with torch.inference_mode():
                return two_stream_scores(model.encode_images(pixels), ours_emb, model.head_config).fused

        t_plain, t_ours = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            t_plain.append(_time(plain, 1))
            t_ours.append(_time(ours, 1))
        p, o = statistics.median(t_plain), statistics.median(t_ours)
        table.add_row(str(batch), f"{batch / p:.1f}", f"{batch / o:.1f}", f"{o / p:.3f}")
    console.print(table)

    table = Table(title="label embedding (one template), CPU")
    for col in ("labels", "plain open_clip s", "prompt learner s", "speed-up"):
        table.add_column(col, justify="right")
    for count in map(int, args.label_counts.split(",")):
        subset = names[:count]

        def plain_text(subset: list[str] = subset) -> None:
            with torch.inference_mode():
                for i in range(0, len(subset), 256):
                    tokens = backbone.tokenize([f"There is a {n} in the scene." for n in subset[i : i + 256]])
                    clip.encode_text(tokens)

        def ours_text(subset: list[str] = subset) -> None:
            with torch.inference_mode():
                model.prompt_learner(subset)

        p = _time(plain_text, 1)
        o = _time(ours_text, 1)
        table.add_row(str(count), f"{p:.2f}", f"{o:.2f}", f"{p / o:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
