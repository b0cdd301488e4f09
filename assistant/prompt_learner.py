"""Prompt tuning: learnable context shared across labels (docs/method.md §3.2, §7).

Every label is embedded from the same tuned prompt, so a label never seen in training (a novel
tag added in Label Studio) gets its embedding from the tuned context at once. The prompt is the
configured template with the label in place of ``{}``::

    [SOT] ctx_1 .. ctx_a  <label tokens>  ctx_a+1 .. ctx_a+b  [EOT]

- ``coop``: the context vectors are free parameters (CoOp), initialised from the template's
  word embeddings (or N(0, 0.02)).
- ``template``: MKT's own variant. The official code trains the whole 49,408-row token table,
  but gradients only reach the template's tokens, so this tunes one row per distinct template
  token id (a word used twice shares its row), without the memory of the whole table.

The label tokens always use the backbone's frozen token embeddings and are excluded from weight
decay (they are not parameters here).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from assistant.backbone import Backbone
from assistant.config import PromptConfig

__all__ = ["PromptLearner"]

LABEL_BATCH = 256


class PromptLearner(nn.Module):
    """Label embeddings from a tunable prompt.

    Args:
        backbone: Provides the tokenizer, the token embeddings and the text tower.
        config: Template and tuning mode.
    """

    def __init__(self, backbone: Backbone, config: PromptConfig) -> None:
        super().__init__()
        self.config = config
        # Not a registered submodule: the backbone belongs to the model, the learner only uses it.
        self._backbone = [backbone]
        prefix, suffix = config.template.split("{}")
        pre_ids, suf_ids = (backbone.encode_tokens([t])[0] if t.strip() else [] for t in (prefix, suffix))
        self.n_prefix, self.n_suffix = len(pre_ids), len(suf_ids)
        table = backbone.token_embedding.weight.detach()

        ctx_ids = pre_ids + suf_ids
        if config.tuning == "template":
            unique = sorted(set(ctx_ids))
            slot = {tok: i for i, tok in enumerate(unique)}
            index = [slot[t] for t in ctx_ids]
            init = (
                table[torch.tensor(unique, dtype=torch.long)].clone() if unique else table.new_zeros(0, table.shape[1])
            )
        else:
            index = list(range(len(ctx_ids)))
            if config.init == "random":
                init = torch.randn(len(ctx_ids), table.shape[1]) * 0.02
            else:
                init = table[torch.tensor(ctx_ids, dtype=torch.long)].clone()
        self.ctx_index: torch.Tensor
        self.ctx_token_ids: torch.Tensor
        self.register_buffer("ctx_index", torch.tensor(index, dtype=torch.long), persistent=True)
        self.register_buffer("ctx_token_ids", torch.tensor(ctx_ids, dtype=torch.long), persistent=True)
        self.ctx = nn.Parameter(init.float(), requires_grad=config.tuning != "none")
        edge = table[torch.tensor([backbone.sot_token_id, backbone.eot_token_id])].clone().float()
        self.sot_eot = nn.Parameter(edge, requires_grad=config.tuning != "none" and config.tune_sot_eot)
        self._label_ids: dict[str, list[int]] = {}

    @property
    def backbone(self) -> Backbone:
        """The backbone whose text tower embeds the prompts."""
        return self._backbone[0]

    def _ids(self, labels: Sequence[str]) -> list[list[int]]:
        missing = [label for label in labels if label not in self._label_ids]
        if missing:
            for label, ids in zip(missing, self.backbone.encode_tokens(missing), strict=True):
                self._label_ids[label] = ids
        return [self._label_ids[label] for label in labels]

    def build(self, labels: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings ``(C, L, W)`` and token ids ``(C, L)`` of the prompts of ``labels``."""
        backbone = self.backbone
        device = self.ctx.device
        room = backbone.context_length - 2 - self.n_prefix - self.n_suffix
        ids = [seq[: max(1, room)] for seq in self._ids(labels)]
        length = 2 + self.n_prefix + self.n_suffix + max(len(s) for s in ids)
        tokens = torch.zeros(len(labels), length, dtype=torch.long)
        ctx_ids = self.ctx_token_ids.tolist()
        for row, seq in enumerate(ids):
            full = [backbone.sot_token_id, *ctx_ids[: self.n_prefix], *seq, *ctx_ids[self.n_prefix :]]
            tokens[row, : len(full) + 1] = torch.tensor([*full, backbone.eot_token_id])
        tokens = tokens.to(device)
        # Frozen embeddings of everything, then the learnable context written over its slots.
        embeds = backbone.token_embedding(tokens).detach().to(self.ctx.dtype)
        ctx = self.ctx[self.ctx_index]
        n_labels = len(labels)
        rows, cols, values = [], [], []
        lengths = torch.tensor([len(s) for s in ids], device=device)
        ar = torch.arange(n_labels, device=device)
        if self.n_prefix:
            pre_cols = torch.arange(1, 1 + self.n_prefix, device=device)
            rows.append(ar.repeat_interleave(self.n_prefix))
            cols.append(pre_cols.repeat(n_labels))
            values.append(ctx[: self.n_prefix].repeat(n_labels, 1))
        if self.n_suffix:
            start = 1 + self.n_prefix + lengths
            suf_cols = start[:, None] + torch.arange(self.n_suffix, device=device)[None, :]
            rows.append(ar.repeat_interleave(self.n_suffix))
            cols.append(suf_cols.reshape(-1))
            values.append(ctx[self.n_prefix :].repeat(n_labels, 1))
        eot_cols = 1 + self.n_prefix + lengths + self.n_suffix
        rows += [ar, ar]
        cols += [torch.zeros_like(ar), eot_cols]
        values += [self.sot_eot[0].expand(n_labels, -1), self.sot_eot[1].expand(n_labels, -1)]
        embeds = embeds.index_put((torch.cat(rows), torch.cat(cols)), torch.cat(values))
        return embeds, tokens

    def forward(self, labels: Sequence[str]) -> torch.Tensor:
        """Label embeddings ``(C, D)``, not normalised, differentiable w.r.t. the context."""
        outs = []
        for start in range(0, len(labels), LABEL_BATCH):
            embeds, tokens = self.build(labels[start : start + LABEL_BATCH])
            outs.append(self.backbone.encode_text_embeddings(embeds, tokens))
        return torch.cat(outs)
