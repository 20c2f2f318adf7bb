"""The query side: what a caption's frozen features become before a model scores them.

CLIP4Clip and TeachCLIP fine-tune CLIP's text encoder with the rest; the kit keeps
the backbone frozen and caches its outputs (features.py), so the text side needs a
trainable stand-in as the video side has one (adapters, temporal module). Two kinds
(`QUERIES`), shared by the student and every teacher so that a comparison between
them is about the video side, not about who reads the caption better:

- "sentence": the cached sentence feature (CLIP's projected EOT token) as it is;
- "words": one trainable transformer block (open_clip's ResidualAttentionBlock) over
  [sentence; word tokens], padded words masked out as keys; the sentence slot and the
  word slots come out refined. Its output projections start at zero, so training starts
  from plain CLIP, as the adapters do. It reads the caption's tokens as a fine-tuned last
  text layer would: on the toy world it decides whether "a red square, then a blue
  circle" is read as two bound events (docs/TOY_WORLD.md has the measured effect).

The search cost stays the student's: a query is encoded once, before the one matrix
product with the stored video vectors.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from open_clip.transformer import ResidualAttentionBlock

from .heads import zero_init

QUERIES = ("sentence", "words")


class QueryEncoder(nn.Module):
    """(sentence [B, D], words [B, L, D], word_mask [B, L]) -> refined (sentence, words)."""

    def __init__(self, dim: int, kind: str = "words", heads: int = 0):
        super().__init__()
        if kind not in QUERIES:
            raise ValueError(f"query {kind!r} is not one of {QUERIES}")
        self.kind = kind
        self.heads = heads or max(1, dim // 64)
        self.block = ResidualAttentionBlock(dim, self.heads) if kind == "words" else None
        if self.block is not None:
            for m in (self.block.attn.out_proj, self.block.mlp.c_proj):   # starts as the identity
                zero_init(m)

    def forward(self, sentence: torch.Tensor, words: torch.Tensor | None, word_mask: torch.Tensor | None):
        if self.block is None:
            return sentence, words
        if words is None or word_mask is None:
            raise ValueError("this model reads word tokens (query='words'): pass words and word_mask "
                             "(features.TextFeatures, or Backbone.encode_text)")
        x = torch.cat([sentence[:, None].to(words.dtype), words], 1)
        keep = torch.cat([torch.ones_like(word_mask[:, :1]), word_mask.bool()], 1)
        b, n = keep.shape
        bias = (~keep).to(x.dtype)[:, None, :].expand(b, n, n) * -1e6     # padded keys out, finite (no NaN)
        x = self.block(x, attn_mask=bias.repeat_interleave(self.heads, dim=0))
        return x[:, 0].to(sentence.dtype), x[:, 1:]
