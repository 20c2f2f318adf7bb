"""Fine-grained teachers: accurate, but they keep frames (or tokens) and score pairs with a network.

The three teachers TeachCLIP learns from, each written after the official TeachCLIP
code (ruc-aimc-lab/TeachCLIP, `modules/`) as far as frozen cached CLIP features allow;
each class docstring lists what follows that code and what differs:

- X-Pool (`XPoolTeacher`, modeling_xpool.py + transformer_xpool.py): the caption is
  the query of a one-head attention over the video's frames (LayerNorms, q/k/v and
  output projections, 1/sqrt(d)), then a linear layer with residual and LayerNorm;
  the score is the cosine of the caption and that text-conditioned video vector.
- X-CLIP (`XClipTeacher`, modeling_xclip.py `_loose_similarity`): the mean of
  video-sentence, video-word, sentence-frame and frame-word scores, the fine-grained
  ones reduced by softmax attention at the fixed temperature 0.01 through learned
  identity-initialised matrices; the video vector comes from a seqTransf module.
- TS2-Net (`TS2NetTeacher`, modeling_ts2net.py, differential_topk.py): token shift
  and perturbed top-k token selection over patch tokens, a seqTransf module over
  the frames' [CLS] and selected tokens, and softmax(4 * normalised score) pooling
  of the caption-frame cosines.

Every teacher exposes `similarity(texts, videos) -> [Bt, Bv]` logits and
`frame_relevance(texts, videos) -> [B, T]`: caption i's distribution over the frames
of video i, what the student's AFA is taught to follow. By default it is the official
`return_fine` output: softmax over frames of the sentence-frame cosine at temperature 1
(X-CLIP, TS2-Net), the diagonal of the pooling attention (X-Pool); `relevance_temperature`
< 1 sharpens it (a documented alternative, not TeachCLIP). Padded frames (mask False)
get zero relevance and no weight anywhere; the official code never pads.

Kit deviation common to all three: the backbone is frozen, so a residual zero-initialised
`adapter` head on each input feature stands in for fine-tuning CLIP. At step 0 every
teacher is therefore its official architecture on top of plain CLIP features.
Pair scoring is vectorised over the Bt x Bv batch; `similarity` chunks it. TeachCLIP
itself loads published teacher checkpoints (fine-tuned end to end by the teachers' own
code); the kit trains its teachers here with symmetric InfoNCE (train.py `train_teacher`).
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import TextFeatures, VideoFeatures
from .heads import mean_pool, residual_head
from .paths import atomic_open
from .query import QueryEncoder
from .student import TemporalModule

TEACHERS = ("xpool", "xclip", "ts2net")
DEFAULT_TEACHERS = ("xclip", "ts2net")   # who teaches the student in every official config but ActivityNet/DiDeMo
NEG = -1e4  # masked logit; finite so an all-masked row cannot turn into NaN


def _adapt(x: torch.Tensor, head: nn.Module | None) -> torch.Tensor:
    """x + head(x), NOT normalised: each teacher normalises where its official code does."""
    return x if head is None else x + head(x)


def _identity_linear(dim: int) -> nn.Linear:
    """transformer_xpool.py `_init_parameters`: weight = I, bias = 0."""
    layer = nn.Linear(dim, dim)
    nn.init.eye_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _eye(n: int) -> nn.Parameter:
    return nn.Parameter(torch.eye(n))


def _masked_softmax(x: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """softmax over `dim` with masked-out entries (mask False) at exactly zero."""
    return x.masked_fill(~mask, NEG).softmax(dim)


def _cosine_relevance(s: torch.Tensor, f: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax_t(<s_b, f_bt> / temperature) for L2-normalised s [B, D] and f [B, T, D]: `return_fine`."""
    return _masked_softmax(torch.einsum("bd,btd->bt", s, f) / temperature, mask)


class Teacher(nn.Module):
    """Base class: subclasses define `encode_texts`, `encode_videos`, `pair_sims` and `pair_relevance`.

    `encode_videos` returns a dict of per-video tensors (videos on dim 0, one of them
    "mask"): what an index would store, so any row slice of it is a valid smaller index.
    """

    name = "teacher"
    needs_patches = False

    def __init__(self, dim: int, num_frames: int = 12, logit_scale: float = 100.0, query: str = "sentence"):
        super().__init__()
        self.dim, self.num_frames = dim, num_frames
        self.log_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))
        self.query = QueryEncoder(dim, query) if query != "sentence" else None   # the student's query side

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs in the teacher's own dtype (float16 patch tokens, a float64 teacher in the tests)."""
        return x.to(self.log_scale.dtype)

    def load_text_init(self, init: dict) -> int:
        """Initialise every seqTransf module from the backbone's text transformer, as CLIP4Clip-style
        code does (`student.temporal_init(clip_model)`); skipped where widths or heads differ.
        Returns how many modules were initialised."""
        n = 0
        for m in self.modules():
            if isinstance(m, TemporalModule) and init["heads"] == m.heads \
                    and init["blocks"][0]["ln_1.weight"].shape[0] == m.position.shape[1]:
                m.load_text_init(init)
                n += 1
        return n

    def encode_texts(self, sentence, words, word_mask) -> dict:
        """The caption's states for `pair_sims`: the query side (query.py) first, then the teacher's own."""
        if self.query is not None:
            sentence, words = self.query(self._in(sentence), self._in(words), word_mask)
        return self.text_states(sentence, words, word_mask)

    # subclasses -------------------------------------------------------------
    def text_states(self, sentence, words, word_mask) -> dict:
        raise NotImplementedError

    def encode_videos(self, frames, mask, patches=None) -> dict:
        raise NotImplementedError

    def pair_sims(self, t: dict, v: dict) -> torch.Tensor:
        """cosine-like similarities [Bt, Bv] of every text with every video."""
        raise NotImplementedError

    def pair_relevance(self, t: dict, v: dict) -> torch.Tensor:
        """[B, T] frame distribution of text i over the frames of video i."""
        raise NotImplementedError

    def bytes_per_video(self, num_frames: int, dim: int, num_patches: int = 0) -> int:
        """What the index must keep per video for this teacher to score a query, in float32 bytes."""
        return num_frames * dim * 4

    # tensor-level API used by the trainer ------------------------------------
    def forward(self, *args, **kw) -> torch.Tensor:
        """The pair logits (what DistributedDataParallel calls)."""
        return self.logits(*args, **kw)

    def logits(self, sentence, words, word_mask, frames, mask, patches=None) -> torch.Tensor:
        t = self.encode_texts(sentence, words, word_mask)
        v = self.encode_videos(frames, mask, patches)
        return self.logit_scale * self.pair_sims(t, v)

    def relevance(self, sentence, words, word_mask, frames, mask, patches=None) -> torch.Tensor:
        t = self.encode_texts(sentence, words, word_mask)
        v = self.encode_videos(frames, mask, patches)
        return self.pair_relevance(t, v)

    # feature-level API --------------------------------------------------------
    def _device(self):
        return self.log_scale.device

    def _text_args(self, texts: TextFeatures, rows: slice):
        d = self._device()
        n = max(1, int(texts.word_mask[rows].sum(1).max()))   # drop all-padding word columns: cost grows with L
        return texts.sentence[rows].to(d), texts.words[rows, :n].to(d), texts.word_mask[rows, :n].to(d)

    def _video_args(self, videos: VideoFeatures, rows: slice):
        d = self._device()
        patches = None
        if self.needs_patches:
            if videos.patches is None:
                raise ValueError(f"teacher {self.name!r} needs patch tokens; these features have none "
                                 f"(build the cache with patches=True)")
            patches = videos.patches[rows].to(d)
        return videos.frames[rows].to(d), videos.mask[rows].to(d), patches

    @torch.no_grad()
    def similarity(self, texts: TextFeatures, videos: VideoFeatures, chunk: int = 256) -> torch.Tensor:
        """Logits [len(texts), len(videos)], computed in chunk x chunk blocks (memory stays bounded)."""
        was = self.training
        self.eval()
        vstates = [self.encode_videos(*self._video_args(videos, slice(j, j + chunk)))
                   for j in range(0, len(videos), chunk)]
        rows = []
        for i in range(0, len(texts), chunk):
            t = self.encode_texts(*self._text_args(texts, slice(i, i + chunk)))
            rows.append(torch.cat([self.pair_sims(t, v) for v in vstates], 1))
        self.train(was)
        return (self.logit_scale * torch.cat(rows)).float().cpu()

    @torch.no_grad()
    def frame_relevance(self, texts: TextFeatures, videos: VideoFeatures, chunk: int = 1024) -> torch.Tensor:
        """[B, T]: row i is caption i's relevance over the frames of video i (len(texts) == len(videos))."""
        if len(texts) != len(videos):
            raise ValueError(f"frame_relevance pairs caption i with video i: got {len(texts)} captions "
                             f"and {len(videos)} videos")
        was = self.training
        self.eval()
        out = []
        for i in range(0, len(texts), chunk):
            rows = slice(i, i + chunk)
            out.append(self.pair_relevance(self.encode_texts(*self._text_args(texts, rows)),
                                           self.encode_videos(*self._video_args(videos, rows))))
        self.train(was)
        return torch.cat(out).float().cpu()


# ---------------------------------------------------------------------------- X-Pool

class XPoolTeacher(Teacher):
    """Text-conditioned pooling (X-Pool, Gorti et al. 2022), after TeachCLIP's modeling_xpool.py.

    Per (caption t, video with frames f_1..f_T), as transformer_xpool.py `Transformer`:
    t~ = LN1(t), f~ = LN1(f) (one LayerNorm shared by both); q = Wq t~, k_f = Wk f~_f,
    v_f = Wv f~_f; a = softmax_f(<q, k_f> / sqrt(d)); o = Wo sum_f a_f v_f;
    y = LN2(o); y = LN3(y + dropout(Wl y)); score = cos(t, y).

    Follows the official code:
    - one attention head (`MultiHeadedAttention.num_heads = 1`), scale 1/sqrt(head dim = d);
    - LayerNorms, q/k/v/out projections and the residual linear layer as written; the
      projections start at identity weight and zero bias, LayerNorms at 1 / 0
      (`_init_parameters`); dropout 0.3 on the linear layer's output;
    - the score is the cosine of the caption's own (not LayerNormed) feature and the
      pooled video vector (modeling_xpool.py `forward`);
    - relevance = the diagonal of the pooling attention a (the one head's softmax
      weights after the 1/sqrt(d) scaling: `attention_weights_out`).
    Differs:
    - residual zero-init adapters on caption and frames stand in for fine-tuning CLIP;
    - padded frames are masked out of the softmax (the official code has no padding);
    - Wo is applied to each frame's value before pooling (exact: the weights sum to 1),
      so the index stores k and Wo v per frame (2 x T x d floats) and the per-pair cost
      is the attention plus the d x d linear layer;
    - `relevance_temperature` != 1 divides the attention logits (an option, not X-Pool).
    """

    name = "xpool"

    def __init__(self, dim: int, num_frames: int = 12, logit_scale: float = 100.0, adapter: str = "mlp",
                 dropout: float = 0.3, relevance_temperature: float = 1.0, query: str = "sentence"):
        super().__init__(dim, num_frames, logit_scale, query)
        self.relevance_temperature = relevance_temperature
        self.text = residual_head(adapter, dim)
        self.frame = residual_head(adapter, dim)
        self.layer_norm1, self.layer_norm2, self.layer_norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (_identity_linear(dim) for _ in range(4))
        self.linear_proj = _identity_linear(dim)
        self.dropout = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(dim)   # one head: head dim = dim

    def bytes_per_video(self, num_frames: int, dim: int, num_patches: int = 0) -> int:
        return 2 * num_frames * dim * 4     # keys and (output-projected) values of every frame

    def text_states(self, sentence, words, word_mask):
        t = _adapt(self._in(sentence), self.text)
        return {"t": F.normalize(t, dim=-1), "q": self.q_proj(self.layer_norm1(t))}

    def encode_videos(self, frames, mask, patches=None):
        x = self.layer_norm1(_adapt(self._in(frames), self.frame))
        return {"k": self.k_proj(x), "v": self.out_proj(self.v_proj(x)), "mask": mask}

    def attention(self, t: dict, v: dict) -> torch.Tensor:
        """Pooling attention [Bt, Bv, T] of every caption over every video's frames."""
        logits = torch.einsum("id,jtd->ijt", t["q"], v["k"]) * self.scale
        return _masked_softmax(logits, v["mask"][None])

    def pair_sims(self, t, v):
        o = torch.einsum("ijt,jtd->ijd", self.attention(t, v), v["v"])      # [Bt, Bv, D]
        y = self.layer_norm2(o)
        y = self.layer_norm3(y + self.dropout(self.linear_proj(y)))
        return torch.einsum("id,ijd->ij", t["t"], F.normalize(y, dim=-1))

    def pair_relevance(self, t, v):
        logits = torch.einsum("bd,btd->bt", t["q"], v["k"]) * self.scale
        return _masked_softmax(logits / self.relevance_temperature, v["mask"])


# ---------------------------------------------------------------------------- X-CLIP

class XClipTeacher(Teacher):
    """Multi-grained contrast (X-CLIP, Ma et al. 2022), after TeachCLIP's modeling_xclip.py.

    With s the sentence, w_l the words, f_t the frames (all L2-normalised) and
    v = normalise(mean_t normalise(seqTransf(f)_t)), as `_loose_similarity`:
    score = (video-sentence + video-word + sentence-frame + frame-word) / 4, where
    video-sentence = s G v; video-word = sum_l (softmax_l(<w_l, v> / 0.01) Ww)_l <w_l, v>;
    sentence-frame = sum_t (softmax_t(<s, f_t> / 0.01) Wf)_t <s, f_t>; frame-word =
    `_attenion_over_fine_grained_sim_matrix` on <w_l M, f_t>: words then frames and
    frames then words, each step a softmax at 0.01 through its own matrix, averaged.

    Follows the official code:
    - the four terms and their mean, the fixed temperature 0.01, and the learned
      matrices global_mat_weight, word_logit_weight, frame_logit_weight,
      local_mat_weight, frame_mat_weight, word_mat_weight, frame_mat_weight2,
      word_mat_weight2, all identity-initialised, applied on the same side (a @ W);
    - the video vector v (video-sentence, video-word) is read after a seqTransf module
      (`TemporalModule`: x + transformer(x + position), 4 layers); the frame features
      of sentence-frame, frame-word and the relevance are the frames BEFORE it
      (`use_original_clip_for_frame_features = True`);
    - the word matrices are num_words x num_words (max_words = 32); a caption of L
      tokens uses their leading L x L block, which equals padding to num_words with
      words that carry no weight;
    - relevance = softmax_t(<s, f_t>) at temperature 1 over the pre-temporal frames
      (`return_fine`: `sentence2frames_sim`).
    Differs:
    - residual zero-init adapters (one for the text tokens, sentence included, one for
      the frames) stand in for fine-tuning CLIP;
    - padded words are masked out (zero weight, zero similarity): the official code
      ignores attention_mask here and attends over all 32 positions, padding tokens
      included; on cached features padding beyond a batch's longest caption is trimmed
      by the trainer, so keeping it would make a caption's score depend on its batch;
    - padded frames are masked the same way (the official code never pads frames);
    - captions longer than num_words keep their first num_words tokens;
    - seqTransf starts from CLIP4Clip's random init unless `load_text_init` is called
      (the official copies CLIP's text transformer blocks).
    """

    name = "xclip"

    def __init__(self, dim: int, num_frames: int = 12, logit_scale: float = 100.0, adapter: str = "mlp",
                 num_words: int = 32, temperature: float = 0.01, layers: int = 4, heads: int | None = None,
                 relevance_temperature: float = 1.0, act: str = "quick_gelu", query: str = "sentence"):
        super().__init__(dim, num_frames, logit_scale, query)
        self.num_words, self.temperature, self.relevance_temperature = num_words, temperature, relevance_temperature
        self.text = residual_head(adapter, dim)
        self.frame = residual_head(adapter, dim)
        self.temporal = TemporalModule(dim, num_frames, layers, heads, act)
        self.global_mat_weight, self.local_mat_weight = _eye(dim), _eye(dim)
        self.word_logit_weight, self.frame_logit_weight = _eye(num_words), _eye(num_frames)
        self.word_mat_weight, self.frame_mat_weight = _eye(num_words), _eye(num_frames)
        self.word_mat_weight2, self.frame_mat_weight2 = _eye(num_words), _eye(num_frames)

    def bytes_per_video(self, num_frames: int, dim: int, num_patches: int = 0) -> int:
        return (num_frames + 1) * dim * 4  # the frames and the video-level vector

    def text_states(self, sentence, words, word_mask):
        words, word_mask = words[:, :self.num_words], word_mask[:, :self.num_words]
        s = F.normalize(_adapt(self._in(sentence), self.text), dim=-1)
        w = F.normalize(_adapt(self._in(words), self.text), dim=-1) * word_mask[..., None]
        return {"s": s, "w": w, "wm": word_mask}

    def encode_videos(self, frames, mask, patches=None):
        if frames.shape[1] > self.num_frames:
            raise ValueError(f"X-CLIP teacher was built for {self.num_frames} frames, got {frames.shape[1]}")
        f = _adapt(self._in(frames), self.frame)
        m = mask[..., None].to(f.dtype)
        seq = F.normalize(self.temporal(f, mask), dim=-1)
        video = mean_pool(seq, mask)
        return {"f": F.normalize(f, dim=-1) * m, "v": video, "mask": mask}

    def _attend(self, sims: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, dim: int) -> torch.Tensor:
        """sum_m (softmax(sims / temp) @ weight)_m * sims_m along `dim`: X-CLIP's reduction step."""
        a = _masked_softmax(sims / self.temperature, mask, dim).movedim(dim, -1)
        n = a.shape[-1]
        return ((a @ weight[:n, :n]).movedim(-1, dim) * sims).sum(dim)

    def pair_sims(self, t, v):
        s, w, wm, f, vid, fm = t["s"], t["w"], t["wm"], v["f"], v["v"], v["mask"]
        video_sentence = (s @ self.global_mat_weight) @ vid.t()                        # [Bt, Bv]
        wv = torch.einsum("ild,jd->ijl", w, vid)                                        # [Bt, Bv, L]
        video_word = self._attend(wv, wm[:, None], self.word_logit_weight, -1)
        sf = torch.einsum("id,jtd->ijt", s, f)                                          # [Bt, Bv, T]
        sentence_frame = self._attend(sf, fm[None], self.frame_logit_weight, -1)
        fine = torch.einsum("ile,jte->ijlt", w @ self.local_mat_weight, f)              # [Bt, Bv, L, T]
        word_level = self._attend(fine, wm[:, None, :, None], self.word_mat_weight, -2)      # [Bt, Bv, T]
        frame_level = self._attend(fine, fm[None, :, None, :], self.frame_mat_weight, -1)    # [Bt, Bv, L]
        sent2frame = self._attend(word_level, fm[None], self.frame_mat_weight2, -1)
        video2word = self._attend(frame_level, wm[:, None], self.word_mat_weight2, -1)
        frame_word = (sent2frame + video2word) / 2
        return (video_sentence + video_word + sentence_frame + frame_word) / 4

    def pair_relevance(self, t, v):
        return _cosine_relevance(t["s"], v["f"], v["mask"], self.relevance_temperature)


# ---------------------------------------------------------------------------- TS2-Net

class _PerturbedTopK(torch.autograd.Function):
    """differential_topk.py `PerturbedTopKFuntion`, written without its one-hot tensor.

    Forward: indicators [n, k, d] = mean over `num_samples` noisy copies x + sigma * noise
    of the one-hot rows of their top-k indices (sorted by position). Backward: the
    official estimator grad_x[b, d] = sum_k g[b, k, d] * sum_s 1[idx_bsk = d] noise_bsd
    / (num_samples * sigma). Scatter/gather keep memory at n x samples x d, not x k as well.
    """

    @staticmethod
    def forward(ctx, x, k: int, num_samples: int, sigma: float):
        n, d = x.shape
        noise = torch.randn(n, num_samples, d, dtype=x.dtype, device=x.device)
        idx = (x[:, None] + sigma * noise).topk(k, dim=-1, sorted=False).indices.sort(-1).values  # [n, S, k]
        idx_t = idx.transpose(1, 2)                                                              # [n, k, S]
        ind = x.new_zeros(n, k, d).scatter_add_(-1, idx_t, x.new_full(idx_t.shape, 1.0 / num_samples))
        ctx.save_for_backward(noise, idx_t)
        ctx.scale = 1.0 / (num_samples * sigma)
        return ind

    @staticmethod
    def backward(ctx, grad):
        noise, idx_t = ctx.saved_tensors
        picked = noise.gather(-1, idx_t.transpose(1, 2)).transpose(1, 2)   # [n, k, S]: noise at each pick
        expected = torch.zeros_like(grad).scatter_add_(-1, idx_t, picked) * ctx.scale            # [n, k, d]
        return (grad * expected).sum(1), None, None, None


def perturbed_topk(x: torch.Tensor, k: int, num_samples: int = 500, sigma: float = 0.05) -> torch.Tensor:
    """Soft top-k indicators [..., k, d] of scores x [..., d] (TS2-Net's differentiable selection)."""
    shape = x.shape
    return _PerturbedTopK.apply(x.reshape(-1, shape[-1]), k, num_samples, sigma).reshape(*shape[:-1], k, shape[-1])


def hard_topk(x: torch.Tensor, k: int) -> torch.Tensor:
    """One-hot top-k indicators [..., k, d] in position order: perturbed_topk as sigma -> 0."""
    idx = x.topk(k, dim=-1, sorted=False).indices.sort(-1).values
    return F.one_hot(idx, x.shape[-1]).to(x.dtype)


class TS2NetTeacher(Teacher):
    """Token shift and token selection (TS2-Net, Liu et al. 2022), after TeachCLIP's modeling_ts2net.py.

    Per frame the tokens are [CLS, patch_1..patch_P] (cached: projected final-layer
    tokens). Token shift moves whole tokens at fixed positions in from the neighbouring
    frames; a scorer rates each patch against the frame's CLS; perturbed top-k keeps
    k = 3 patches; the sequence [CLS_1, sel_1..3, CLS_2, ...] (T x 4 tokens) goes through
    a seqTransf module and the CLS outputs f_t are the frame features. With
    c_t = cos(s, f_t): score = sum_t softmax_t(4 c_t / ||c||_2) c_t.

    Follows the official code:
    - selection (differential_topk.py `VisualTokenSelection`): scorer `PredictorLG`
      (LayerNorm, Linear d -> d/2, GELU on every token; [token, CLS] -> Linear d -> d/2,
      GELU, Linear -> 1, Tanh; no biases, weights normal(0, 0.02)); top-k over the
      patches only, CLS always kept; `PerturbedTopK` (500 samples, sigma 0.05) with its
      gradient estimator; selected features = indicators @ patches;
    - seqTransf over all T x (k + 1) tokens with positions 0..T(k+1)-1, then the CLS
      positions are taken (`_loose_similarity`, `frame_embedding_index`);
    - scoring `get_frame_selectedcls_similarity` (what `forward` returns; with one
      sentence token its first softmax is over a size-1 axis, so it equals
      `get_frame_similarity`): cosines, divided by their L2 norm over the frames,
      softmax(4 x) over frames, weighted sum of the cosines;
    - relevance = softmax_t(cos(s, f_t)) at temperature 1 over the post-seqTransf CLS
      frames (`return_fine`).
    Differs (cached final-layer tokens, frozen backbone):
    - token shift: the original TS2-Net (`PatchShiftModule`, until_module.py) shifts
      whole tokens at positions 1, 1+fold, ... from frame t-1 and 4, 4+fold, ... from
      frame t+1 (fold = tokens // 7) at the input of the attention of visual layers
      10-11, INSIDE the encoder; here the same positions of the cached final-layer
      tokens are shifted before selection, which only changes which tokens are
      picked (the CLS is never shifted). Note that TeachCLIP's own TS2-Net never calls
      `make_patch_shift`, so the teacher it distils runs without any shift:
      `token_shift=False` reproduces that;
    - selection reads the final-layer tokens (as the official does; its selected
      tokens then only feed seqTransf, as here);
    - evaluation (and `frame_relevance`, `similarity`) uses hard top-k, the sigma -> 0
      limit, so scores are deterministic; the official samples noise at test time too;
      training uses the perturbed top-k;
    - a residual zero-init adapter on the caption and one on the selected visual tokens
      stand in for fine-tuning CLIP; seqTransf starts from CLIP4Clip's random init
      unless `load_text_init`;
    - padded frames are masked: not shifted in, masked as seqTransf keys (each frame's
      flag repeated over its k + 1 tokens; the official tiles the T flags k + 1 times,
      which only matters with padding, and it never pads), zero weight in the pooling.
    """

    name = "ts2net"
    needs_patches = True

    def __init__(self, dim: int, num_frames: int = 12, logit_scale: float = 100.0, adapter: str = "mlp",
                 top_k: int = 3, num_samples: int = 500, sigma: float = 0.05, token_shift: bool = True,
                 shift_div: int = 7, pool_scale: float = 4.0, layers: int = 4, heads: int | None = None,
                 relevance_temperature: float = 1.0, act: str = "quick_gelu", query: str = "sentence"):
        super().__init__(dim, num_frames, logit_scale, query)
        self.top_k, self.num_samples, self.sigma = top_k, num_samples, sigma
        self.use_shift, self.shift_div, self.pool_scale = token_shift, shift_div, pool_scale
        self.relevance_temperature = relevance_temperature
        self.text = residual_head(adapter, dim)
        self.frame = residual_head(adapter, dim)
        h = max(1, dim // 2)
        self.score_in = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, h, bias=False), nn.GELU())
        self.score_out = nn.Sequential(nn.Linear(2 * h, h, bias=False), nn.GELU(), nn.Linear(h, 1, bias=False),
                                       nn.Tanh())
        for m in (*self.score_in, *self.score_out):
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
        self.temporal = TemporalModule(dim, num_frames * (top_k + 1), layers, heads, act)

    def token_shift(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T, N, D] tokens (CLS first): positions 1::fold from frame t-1, 4::fold from frame t+1.

        A frame with no valid neighbour on that side (the first / last frame, or a
        padded neighbour) keeps its own token, as the official copy-then-overwrite does.
        """
        n = tokens.shape[2]
        fold = max(1, n // self.shift_div)
        left = torch.tensor(range(1, n, fold), dtype=torch.long, device=tokens.device)
        right = torch.tensor(range(4, n, fold), dtype=torch.long, device=tokens.device)
        if mask is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        out = tokens.clone()
        if len(left):
            out[:, 1:, left] = torch.where(mask[:, :-1, None, None], tokens[:, :-1][:, :, left],
                                           tokens[:, 1:][:, :, left])
        if len(right):
            out[:, :-1, right] = torch.where(mask[:, 1:, None, None], tokens[:, 1:][:, :, right],
                                             tokens[:, :-1][:, :, right])
        return out

    def select(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, T, N, D] (CLS first) -> [B, T, 1 + k, D]: the CLS and the k selected patch tokens."""
        h = self.score_in(tokens)
        score = self.score_out(torch.cat([h, h[:, :, :1].expand_as(h)], -1)).squeeze(-1)[:, :, 1:]  # [B, T, P]
        k = min(self.top_k, score.shape[-1])
        ind = perturbed_topk(score, k, self.num_samples, self.sigma) if self.training else hard_topk(score, k)
        picked = torch.einsum("btkp,btpd->btkd", ind, tokens[:, :, 1:])
        return torch.cat([tokens[:, :, :1], picked], 2)

    def text_states(self, sentence, words, word_mask):
        return {"t": F.normalize(_adapt(self._in(sentence), self.text), dim=-1)}

    def encode_videos(self, frames, mask, patches=None):
        if patches is None:
            raise ValueError("TS2-Net teacher needs patch tokens")
        b, t, d = frames.shape
        if t > self.num_frames:
            raise ValueError(f"TS2-Net teacher was built for {self.num_frames} frames, got {t}")
        tokens = torch.cat([self._in(frames)[:, :, None], self._in(patches)], 2)        # [B, T, 1 + P, D]
        if self.use_shift:
            tokens = self.token_shift(tokens, mask)
        seq = _adapt(self.select(tokens), self.frame)                                   # [B, T, 1 + k, D]
        per = seq.shape[2]
        out = self.temporal(seq.reshape(b, t * per, d), mask.repeat_interleave(per, dim=1))
        f = F.normalize(out[:, ::per], dim=-1) * mask[..., None].to(out.dtype)          # the CLS positions
        return {"f": f, "mask": mask}

    def pair_sims(self, t, v):
        c = torch.einsum("id,jtd->ijt", t["t"], v["f"])                                # padded frames: 0
        w = _masked_softmax(self.pool_scale * c / c.norm(dim=-1, keepdim=True).clamp(min=1e-6), v["mask"][None])
        return (w * c).sum(-1)

    def pair_relevance(self, t, v):
        return _cosine_relevance(t["t"], v["f"], v["mask"], self.relevance_temperature)


# ---------------------------------------------------------------------------- several

class EnsembleTeacher(Teacher):
    """Several trained teachers as one: mean of their logits and of their frame relevances."""

    name = "ensemble"

    def __init__(self, members: list[Teacher]):
        super().__init__(members[0].dim, members[0].num_frames)
        self.members = nn.ModuleList(members)
        self.needs_patches = any(m.needs_patches for m in members)

    def bytes_per_video(self, num_frames: int, dim: int, num_patches: int = 0) -> int:
        return sum(m.bytes_per_video(num_frames, dim, num_patches) for m in self.members)

    def logits(self, *args, **kw):
        return torch.stack([m.logits(*args, **kw) for m in self.members]).mean(0)

    def relevance(self, *args, **kw):
        return torch.stack([m.relevance(*args, **kw) for m in self.members]).mean(0)

    def similarity(self, texts, videos, chunk: int = 256):
        return torch.stack([m.similarity(texts, videos, chunk) for m in self.members]).mean(0)

    def frame_relevance(self, texts, videos, chunk: int = 1024):
        return torch.stack([m.frame_relevance(texts, videos, chunk) for m in self.members]).mean(0)


_CLASSES = {"xpool": XPoolTeacher, "xclip": XClipTeacher, "ts2net": TS2NetTeacher}


def build_teacher(name: str, dim: int, num_frames: int = 12, **kw) -> Teacher:
    if name not in _CLASSES:
        raise ValueError(f"unknown teacher {name!r}; choose from {TEACHERS}")
    return _CLASSES[name](dim, num_frames, **kw)


def save_teacher(teacher: Teacher, path: str | os.PathLike, **build_kw) -> None:
    """Name, sizes and weights in one file, written atomically."""
    with atomic_open(path) as f:
        torch.save({"name": teacher.name, "dim": teacher.dim, "num_frames": teacher.num_frames,
                    "kwargs": build_kw, "state_dict": teacher.state_dict()}, f)


def load_teacher(path: str | os.PathLike, map_location="cpu") -> Teacher:
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
        t = build_teacher(blob["name"], blob["dim"], blob["num_frames"], **blob["kwargs"])
        t.load_state_dict(blob["state_dict"])
    except Exception as e:  # a truncated or foreign file fails in many ways; say which file
        raise ValueError(f"{path}: not a teacher checkpoint ({e})") from None
    return t
