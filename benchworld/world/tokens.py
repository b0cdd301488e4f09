"""A caching front end to open_clip's tokenizer for the world's captions.

open_clip's ``SimpleTokenizer`` spends ~0.1 ms per caption on text cleaning (ftfy, html
unescaping) and a regex split before its (cached) BPE, which made tokenising the bottleneck of
the reference data pipeline (docs/benchmark.md). World captions are plain lower-case ASCII, so
cleaning is the identity and the split can use the standard library; each distinct word is
encoded once with open_clip's own BPE and cached. The output is identical to
``open_clip.tokenize`` for such text (a unit test compares them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

import numpy as np
from numpy.typing import NDArray

__all__ = ["CaptionTokenizer"]

# open_clip's split pattern restricted to ASCII: contractions, letter runs, single digits, and
# runs of other non-space characters.
_SPLIT = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+")


@cache
def _simple_tokenizer() -> object:
    from open_clip.tokenizer import SimpleTokenizer  # heavy: reads the 1.3 MB BPE merges file

    return SimpleTokenizer()


class CaptionTokenizer:
    """Tokenises lower-case ASCII captions into fixed-length id rows, as open_clip does.

    Args:
        context_length: Tokens per row, start and end tokens included; longer captions are
            truncated with the end token kept last (open_clip's behaviour).
    """

    def __init__(self, context_length: int) -> None:
        tok = _simple_tokenizer()
        self.context_length = context_length
        self._encode = tok.encode  # type: ignore[attr-defined]
        self.sot: int = tok.sot_token_id  # type: ignore[attr-defined]
        self.eot: int = tok.eot_token_id  # type: ignore[attr-defined]
        self._words: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        """BPE ids of a caption, without start/end tokens."""
        ids: list[int] = []
        for piece in _SPLIT.findall(text.lower()):
            cached = self._words.get(piece)
            if cached is None:
                cached = self._words[piece] = list(self._encode(piece))
            ids.extend(cached)
        return ids

    def __call__(self, texts: Sequence[str]) -> NDArray[np.int64]:
        """``(len(texts), context_length)`` int64 ids, zero-padded."""
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot
            out[row, : len(ids)] = ids
        return out

    def length(self, text: str) -> int:
        """Token count of a caption including start and end tokens (before truncation)."""
        return len(self.encode(text)) + 2
