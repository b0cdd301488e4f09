"""Builders shared by tests (tiny models written to disk, synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def build_hf_tiny_clip(directory: Path, seed: int = 0) -> Path:
    """Save a tiny transformers CLIPModel and a CLIPTokenizer built from open_clip's bundled BPE.

    No hub access: the vocabulary comes from the BPE file the open_clip wheel ships.
    """
    import torch
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    torch.manual_seed(seed)
    simple = SimpleTokenizer()
    vocab = {}
    for token, idx in simple.encoder.items():
        token = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}.get(token, token)
        vocab[token] = idx
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    merges = sorted(simple.bpe_ranks.items(), key=lambda kv: kv[1])
    lines = ["#version: 0.2"] + [f"{a} {b}" for (a, b), _ in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    tokenizer.save_pretrained(directory)
    config = CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "size": {"shortest_edge": 32}})
    )
    return directory


def colour_world(n: int, n_labels: int, seed: int = 0, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Images whose labels are coloured stripes: learnable in a few steps by a tiny model."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, size, size, 3), dtype=np.uint8)
    targets = np.where(rng.random((n, n_labels)) < 0.35, 1, -1).astype(np.int8)
    band = size // 4
    for i in range(n):
        for c in np.nonzero(targets[i] > 0)[0]:
            images[i, (c % 4) * band : (c % 4) * band + band, :, c % 3] = 255
    return images, targets


def save_pngs(pixels: np.ndarray, folder: Path, stem: str) -> list[Path]:
    """Write ``(N, H, W, 3)`` uint8 images as ``folder/<stem>00.png`` ... and return the paths."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}{i:02d}.png" for i in range(len(pixels))]
    for path, image in zip(paths, pixels, strict=True):
        Image.fromarray(image).save(path)
    return paths
