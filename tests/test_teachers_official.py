"""The teachers against the official TeachCLIP teacher code, formula by formula.

The references here are written independently of teachers.py: per (caption, video)
pair, with Python loops, from the formulas of modeling_xclip.py, transformer_xpool.py
and modeling_ts2net.py, in float64. They check the vectorised teachers, not copy them.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from teachclip_lite.teachers import (TEACHERS, XClipTeacher, build_teacher, hard_topk, load_teacher, perturbed_topk,
                                     save_teacher)

D, T, L, P = 16, 6, 7, 9


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is faster, and the machine is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _inputs(b=5, seed=0, dtype=torch.float32, pad=True):
    g = torch.Generator().manual_seed(seed)
    sentence = torch.randn(b, D, generator=g, dtype=dtype)
    words = torch.randn(b, L, D, generator=g, dtype=dtype)
    lengths = torch.tensor([L, 3, 5, L, 2, 4, 6, 1][:b]) if pad else torch.full((b,), L)
    word_mask = torch.arange(L)[None] < lengths[:, None]
    frames = torch.randn(b, T, D, generator=g, dtype=dtype)
    mask = torch.ones(b, T, dtype=torch.bool)
    if pad:
        mask[0, 4:] = False
        mask[2, 2:] = False
    patches = torch.randn(b, T, P, D, generator=g).half()
    return sentence, words, word_mask, frames, mask, patches


def _randomise(teacher, seed=1, scale=0.3):
    """Move every parameter off its init (adapters included), so no term can hide behind an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return teacher


def _zero_adapters(teacher):
    with torch.no_grad():
        for head in (teacher.text, teacher.frame):
            head[-1].weight.zero_(), head[-1].bias.zero_()
    return teacher


# ----------------------------------------------------------------------------- relevance

@pytest.mark.parametrize("name", TEACHERS)
def test_relevance_rows_are_distributions_and_padding_gets_zero(name):
    torch.manual_seed(0)
    t = _randomise(build_teacher(name, D, T)).eval()
    s, w, wm, f, m, p = _inputs()
    f[~m] = 1e3                                  # garbage in padded frames must stay out
    r = t.relevance(s, w, wm, f, m, p)
    assert r.shape == (5, T) and torch.isfinite(r).all()
    assert torch.allclose(r.sum(-1), torch.ones(5), atol=1e-5)
    assert (r[~m] == 0).all() and (r[m] > 0).all()


def test_xclip_relevance_is_temperature_one_softmax_of_pre_temporal_cosines():
    torch.manual_seed(0)
    t = _randomise(build_teacher("xclip", D, T)).eval()
    s, w, wm, f, m, p = _inputs()
    sn = F.normalize(s + t.text(s), dim=-1)
    fn = F.normalize(f + t.frame(f), dim=-1)
    cos = torch.einsum("bd,btd->bt", sn, fn).masked_fill(~m, float("-inf"))
    r = t.relevance(s, w, wm, f, m, p)
    assert torch.allclose(r, cos.softmax(-1), atol=1e-6)
    with torch.no_grad():                        # the official reads the frames BEFORE seqTransf
        for q in t.temporal.parameters():
            q.add_(1.0)
    assert torch.allclose(t.relevance(s, w, wm, f, m, p), r, atol=1e-6)
    sharp = XClipTeacher(D, T, relevance_temperature=0.1)
    sharp.load_state_dict(t.state_dict())
    assert torch.allclose(sharp.eval().relevance(s, w, wm, f, m, p), (cos / 0.1).softmax(-1), atol=1e-5)


def test_ts2net_relevance_is_temperature_one_softmax_of_post_temporal_cls_cosines():
    torch.manual_seed(0)
    t = _randomise(build_teacher("ts2net", D, T)).eval()
    s, w, wm, f, m, p = _inputs()
    sn = F.normalize(s + t.text(s), dim=-1)
    # by hand: [CLS, patches] -> token shift -> hard top-3 -> adapter -> seqTransf -> CLS outputs
    tokens = t.token_shift(torch.cat([f[:, :, None], p.float()], 2), m)
    h = t.score_in(tokens)
    score = t.score_out(torch.cat([h, h[:, :, :1].expand_as(h)], -1))[..., 0][:, :, 1:]
    idx = score.topk(3, dim=-1).indices.sort(-1).values
    picked = torch.gather(tokens[:, :, 1:], 2, idx[..., None].expand(-1, -1, -1, D))
    seq = torch.cat([tokens[:, :, :1], picked], 2)
    seq = seq + t.frame(seq)
    out = t.temporal(seq.reshape(5, T * 4, D), m.repeat_interleave(4, 1))[:, ::4]
    cos = torch.einsum("bd,btd->bt", sn, F.normalize(out, dim=-1)).masked_fill(~m, float("-inf"))
    assert torch.allclose(t.relevance(s, w, wm, f, m, p), cos.softmax(-1), atol=1e-5)


def test_xpool_relevance_is_the_diagonal_of_the_pooling_attention():
    torch.manual_seed(0)
    t = _randomise(build_teacher("xpool", D, T)).eval()
    s, w, wm, f, m, p = _inputs()
    te, ve = t.encode_texts(s, w, wm), t.encode_videos(f, m)
    a = t.attention(te, ve)                                           # [Bt, Bv, T], what pair_sims pools with
    assert torch.allclose(t.pair_relevance(te, ve), torch.diagonal(a).T, atol=1e-6)
    assert torch.allclose(a.sum(-1), torch.ones(5, 5), atol=1e-5)
    assert (a[:, 0, 4:] == 0).all() and (a[:, 2, 2:] == 0).all()


# ----------------------------------------------------------------------------- X-Pool

def _layer_norm(x, ln):
    return F.layer_norm(x, (x.shape[-1],), ln.weight, ln.bias, ln.eps)


def _xpool_reference(t, s, f, m):
    """transformer_xpool.py per pair, in the official order (output projection AFTER pooling)."""
    s, f = s + t.text(s), f + t.frame(f)
    out = torch.zeros(len(s), len(f), dtype=s.dtype)
    for i in range(len(s)):
        q = t.q_proj(_layer_norm(s[i], t.layer_norm1))
        for j in range(len(f)):
            x = _layer_norm(f[j][m[j]], t.layer_norm1)                 # the valid frames only: no padding
            a = ((t.k_proj(x) @ q) / math.sqrt(D)).softmax(0)
            o = t.out_proj(a @ t.v_proj(x))
            y = _layer_norm(o, t.layer_norm2)
            y = _layer_norm(y + t.linear_proj(y), t.layer_norm3)
            out[i, j] = F.cosine_similarity(s[i], y, dim=0)
    return out


def test_xpool_matches_the_official_block_per_pair():
    torch.manual_seed(0)
    t = _randomise(build_teacher("xpool", D, T)).double().eval()
    s, w, wm, f, m, _ = _inputs(dtype=torch.float64)
    with torch.no_grad():
        got = t.pair_sims(t.encode_texts(s, w, wm), t.encode_videos(f, m))
        assert torch.allclose(got, _xpool_reference(t, s, f, m), atol=1e-10)


def test_xpool_at_init_is_identity_projections_over_plain_clip():
    t = build_teacher("xpool", D, T).double().eval()
    for lin in (t.q_proj, t.k_proj, t.v_proj, t.out_proj, t.linear_proj):
        assert torch.equal(lin.weight, torch.eye(D, dtype=torch.float64)) and (lin.bias == 0).all()
    s, w, wm, f, m, _ = _inputs(dtype=torch.float64)
    ln = lambda x: F.layer_norm(x, (D,))                                  # noqa: E731
    a = (torch.einsum("id,jtd->ijt", ln(s), ln(f)) / math.sqrt(D)).masked_fill(~m[None], float("-inf")).softmax(-1)
    pooled = torch.einsum("ijt,jtd->ijd", a, ln(f))
    expect = torch.einsum("id,ijd->ij", F.normalize(s, dim=-1), F.normalize(ln(2 * ln(pooled)), dim=-1))
    te, ve = t.encode_texts(s, w, wm), t.encode_videos(f, m)
    assert torch.allclose(t.attention(te, ve), a, atol=1e-10)
    assert torch.allclose(t.pair_sims(te, ve), expect, atol=1e-10)
    # a known value: every frame equal to a zero-mean caption -> uniform attention, cosine 1
    c = s - s.mean(-1, keepdim=True)
    same = c[:, None].expand(-1, T, -1).contiguous()
    ve = t.encode_videos(same, torch.ones(5, T, dtype=torch.bool))
    te = t.encode_texts(c, w, wm)
    assert torch.allclose(t.attention(te, ve), torch.full((5, 5, T), 1 / T, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(torch.diagonal(t.pair_sims(te, ve)), torch.ones(5, dtype=torch.float64), atol=1e-4)


# ----------------------------------------------------------------------------- X-CLIP

def _soft(x, weight, tau=0.01):
    """sum_m (softmax(x / tau) @ W)_m x_m for one vector x: X-CLIP's attention step."""
    n = len(x)
    return ((x / tau).softmax(0) @ weight[:n, :n]) @ x


def _xclip_reference(t, s, w, wm, f, m):
    """modeling_xclip.py `_loose_similarity` + `_attenion_over_fine_grained_sim_matrix`, one pair at a
    time, each caption cut to its own words and each video to its own frames (the official has no padding)."""
    sn = F.normalize(s + t.text(s), dim=-1)
    wn = F.normalize(w + t.text(w), dim=-1)
    fa = f + t.frame(f)
    out = torch.zeros(len(s), len(f), dtype=s.dtype)
    for j in range(len(f)):
        nf = int(m[j].sum())
        seq = t.temporal(fa[j:j + 1, :nf], torch.ones(1, nf, dtype=torch.bool))[0]
        v = F.normalize(F.normalize(seq, dim=-1).mean(0), dim=0)
        fr = F.normalize(fa[j, :nf], dim=-1)                            # original frames, normalised
        for i in range(len(s)):
            ws = wn[i, :int(wm[i].sum())]
            vs = sn[i] @ t.global_mat_weight @ v
            vw = _soft(ws @ v, t.word_logit_weight)
            sf = _soft(fr @ sn[i], t.frame_logit_weight)
            fine = (ws @ t.local_mat_weight) @ fr.T                     # [words, frames]
            word_level = torch.stack([_soft(fine[:, k], t.word_mat_weight) for k in range(nf)])
            frame_level = torch.stack([_soft(fine[k, :], t.frame_mat_weight) for k in range(len(ws))])
            fw = (_soft(word_level, t.frame_mat_weight2) + _soft(frame_level, t.word_mat_weight2)) / 2
            out[i, j] = (vs + vw + sf + fw) / 4
    return out


@pytest.mark.parametrize("pad", [False, True])
def test_xclip_matches_the_official_scoring(pad):
    """Random (non-identity) matrices; adapters zero (identity) or random: the same to 1e-6 in float64."""
    torch.manual_seed(0)
    t = _randomise(XClipTeacher(D, T, num_words=L, layers=2), scale=0.05).double().eval()
    s, w, wm, f, m, _ = _inputs(dtype=torch.float64, pad=pad)
    with torch.no_grad():
        got = t.pair_sims(t.encode_texts(s, w, wm), t.encode_videos(f, m))
        assert torch.allclose(got, _xclip_reference(t, s, w, wm, f, m), atol=1e-6)
        _zero_adapters(t)
        got = t.pair_sims(t.encode_texts(s, w, wm), t.encode_videos(f, m))
        assert torch.allclose(got, _xclip_reference(t, s, w, wm, f, m), atol=1e-6)


def test_xclip_word_matrices_are_num_words_and_cut_to_the_caption():
    t = XClipTeacher(D, T)
    assert t.word_logit_weight.shape == (32, 32) and t.frame_logit_weight.shape == (T, T)
    assert t.temperature == 0.01 and [n for n, q in t.named_parameters() if q.ndim == 0] == ["log_scale"]
    s, w, wm, f, m, _ = _inputs()
    long = torch.cat([w] * 6, 1)                                        # 42 tokens: the first 32 are kept
    te = t.encode_texts(s, long, torch.ones(5, 42, dtype=torch.bool))
    assert te["w"].shape[1] == 32 and torch.isfinite(t.pair_sims(te, t.encode_videos(f, m))).all()


# ----------------------------------------------------------------------------- TS2-Net

def test_ts2net_pools_frame_cosines_with_softmax_of_4_times_normalised_scores():
    torch.manual_seed(0)
    t = _randomise(build_teacher("ts2net", D, T)).double().eval()
    s, w, wm, f, m, p = _inputs(dtype=torch.float64)
    te, ve = t.encode_texts(s, w, wm), t.encode_videos(f, m, p)
    ref = torch.zeros(5, 5, dtype=torch.float64)
    for i in range(5):
        for j in range(5):
            c = ve["f"][j][m[j]] @ te["t"][i]                           # get_frame_similarity, one pair
            ref[i, j] = (4 * c / c.norm()).softmax(0) @ c
    assert torch.allclose(t.pair_sims(te, ve), ref, atol=1e-10)
    assert t.temporal.position.shape[0] == T * 4                        # CLS + 3 selected tokens per frame


def test_ts2net_token_shift_moves_whole_tokens_at_the_official_positions():
    t = build_teacher("ts2net", D, T, shift_div=7)
    n = 17                                                              # 1 CLS + 16 patches: fold = 2
    x = torch.arange(T, dtype=torch.float)[None, :, None, None].expand(1, T, n, 2).contiguous()
    s = t.token_shift(x)
    frame = s[0, :, :, 0]                                               # which frame each token came from
    left, right = list(range(1, n, 2)), list(range(4, n, 2))
    assert (frame[3, 0] == 3) and all(frame[3, k] == 2 for k in left) and all(frame[3, k] == 4 for k in right)
    assert all(frame[3, k] == 3 for k in range(n) if k not in left + right)
    assert all(frame[0, k] == 0 for k in left) and all(frame[T - 1, k] == T - 1 for k in right)
    m = torch.ones(1, T, dtype=torch.bool)
    m[0, 4:] = False                                                    # a padded neighbour shifts nothing in
    assert all(t.token_shift(x, m)[0, 3, k, 0] == 3 for k in right)
    off = build_teacher("ts2net", D, T, token_shift=False).eval()
    off.load_state_dict(t.state_dict())
    sent, w, wm, f, mask, p = _inputs()
    assert not torch.allclose(off.encode_videos(f, mask, p)["f"], t.eval().encode_videos(f, mask, p)["f"])


def test_perturbed_topk_is_the_official_estimator():
    x = torch.randn(6, 10, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(5)
    ind = perturbed_topk(x, 3, num_samples=50, sigma=0.05)
    g = torch.randn(6, 3, 10, dtype=torch.float64)
    (ind * g).sum().backward()
    torch.manual_seed(5)                                                # the same noise, the dense formulas
    noise = torch.randn(6, 50, 10, dtype=torch.float64)
    idx = (x.detach()[:, None] + 0.05 * noise).topk(3, dim=-1).indices.sort(-1).values
    onehot = F.one_hot(idx, 10).double()                                # [n, S, k, d]
    assert torch.allclose(ind.detach(), onehot.mean(1))
    expected = torch.einsum("nskd,nsd->nkd", onehot, noise) / 50 / 0.05
    assert torch.allclose(x.grad, torch.einsum("nkd,nkd->nd", g, expected))
    assert torch.allclose(perturbed_topk(x.detach(), 3, 20, 1e-9), hard_topk(x.detach(), 3))


# ----------------------------------------------------------------------------- all three

@pytest.mark.parametrize("name", TEACHERS)
def test_pair_sims_on_chunks_of_stored_videos_equal_the_full_matrix(name):
    torch.manual_seed(0)
    t = _randomise(build_teacher(name, D, T)).eval()
    s, w, wm, f, m, p = _inputs(b=8)
    with torch.no_grad():
        te, stored = t.encode_texts(s, w, wm), t.encode_videos(f, m, p)
        assert "mask" in stored and all(v.shape[0] == 8 for v in stored.values())
        full = t.pair_sims(te, stored)
        parts = torch.cat([t.pair_sims(te, {k: v[a:a + 3] for k, v in stored.items()}) for a in range(0, 8, 3)], 1)
        assert torch.allclose(full, parts, atol=1e-5)
        one = torch.cat([t.pair_sims(te, t.encode_videos(f[a:a + 1], m[a:a + 1], p[a:a + 1])) for a in range(8)], 1)
        assert torch.allclose(full, one, atol=1e-5)                     # a video's state does not depend on its batch


@pytest.mark.parametrize("name,kw", [("xpool", {"dropout": 0.1, "adapter": "linear"}),
                                     ("xclip", {"num_words": 16, "layers": 2}),
                                     ("ts2net", {"top_k": 2, "token_shift": False})])
def test_save_load_roundtrip(tmp_path, name, kw):
    torch.manual_seed(0)
    t = _randomise(build_teacher(name, D, T, **kw)).eval()
    save_teacher(t, tmp_path / "t.pt", **kw)
    r = load_teacher(tmp_path / "t.pt").eval()
    s, w, wm, f, m, p = _inputs()
    assert torch.equal(t.logits(s, w, wm, f, m, p), r.logits(s, w, wm, f, m, p))
    assert torch.equal(t.relevance(s, w, wm, f, m, p), r.relevance(s, w, wm, f, m, p))


@pytest.mark.parametrize("name", TEACHERS)
def test_every_teacher_learns_from_infonce(name):
    from teachclip_lite.experiments import synthetic_features
    from teachclip_lite.losses import info_nce

    fs, _ = synthetic_features(n_train=48, n_val=4, n_test=4, dim=D, num_frames=T, patches=4, seed=0)
    tr = fs.split("train")
    rows = torch.arange(min(40, len(tr.texts)))
    vids = tr.texts.video[rows]
    keep = torch.tensor([int(v) not in vids[:k].tolist() for k, v in enumerate(vids)])   # one caption per video
    rows, vids = rows[keep], vids[keep]
    args = (tr.texts.sentence[rows], tr.texts.words[rows], tr.texts.word_mask[rows],
            tr.videos.frames[vids], tr.videos.mask[vids], tr.videos.patches[vids])
    torch.manual_seed(0)
    t = build_teacher(name, D, T, logit_scale=fs.logit_scale)
    with torch.no_grad():
        before = info_nce(t.eval().logits(*args)).item()
    opt = torch.optim.AdamW(t.parameters(), lr=3e-3, weight_decay=0.2)
    t.train()
    for _ in range(15):
        loss = info_nce(t.logits(*args))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = info_nce(t.eval().logits(*args)).item()
    assert after < before - 0.05, (before, after)


def test_seqtransf_modules_take_the_text_transformer_init():
    from types import SimpleNamespace

    from open_clip.transformer import Transformer

    from teachclip_lite.student import temporal_init

    torch.manual_seed(0)
    clip = SimpleNamespace(transformer=Transformer(D, 2, 2), text_projection=torch.randn(D, D),
                           positional_embedding=torch.randn(32, D))
    init = temporal_init(clip, layers=2)
    for name in ("xclip", "ts2net"):
        t = build_teacher(name, D, T, layers=2, heads=2)
        assert t.load_text_init(init) == 1
        block, ref = t.temporal.transformer.resblocks[1], clip.transformer.resblocks[1]
        assert torch.equal(block.mlp.c_fc.weight, ref.mlp.c_fc.weight)
        n = min(len(t.temporal.position), 32)
        assert torch.equal(t.temporal.position[:n], clip.positional_embedding[:n])
        assert build_teacher(name, D, T, layers=2).load_text_init(init) == 0      # 1 head != the text's 2: skipped
