"""Retrieval metrics against a hand-made ranking and against CLIP4Clip's metrics.py (transcribed below);
attention_hit against hand-placed weights."""
import numpy as np
import pytest
import torch

from teachclip_lite.metrics import attention_hit, attention_hit_any, retrieval_metrics, uniform_weights


def test_hand_made_ranking_one_caption_per_video():
    # the correct video (the diagonal) lands at ranks 1, 3, 2, 4
    sim = torch.tensor([
        [0.9, 0.1, 0.2, 0.3],
        [0.5, 0.2, 0.1, 0.6],
        [0.1, 0.2, 0.5, 0.7],
        [0.4, 0.3, 0.2, 0.1],
    ])
    m = retrieval_metrics(sim, torch.arange(4))
    assert m["t2v_r1"] == 25.0 and m["t2v_r5"] == 100.0 and m["t2v_r10"] == 100.0
    assert m["t2v_mdr"] == 2.5 and m["t2v_mnr"] == 2.5
    assert m["sumr"] == 225.0
    # video->text, column j ranks caption j at: col0 -> 1; col1 -> 3 (0.2 ties with caption 2 and
    # ties count against it, 0.3 is above); col2 -> 1; col3 -> 4
    assert m["v2t_r1"] == 50.0 and m["v2t_r5"] == 100.0 and m["v2t_mnr"] == pytest.approx(9 / 4)
    assert m["v2t_mdr"] == 2.0


def test_many_captions_per_video_take_the_best_for_v2t():
    # captions 0, 1 belong to video 0; caption 2 to video 1
    sim = torch.tensor([[0.2, 0.8], [0.9, 0.1], [0.3, 0.4]])
    m = retrieval_metrics(sim, torch.tensor([0, 0, 1]))
    assert m["t2v_r1"] == pytest.approx(200 / 3)   # ranks 2, 1, 1
    # video 0's column: captions score 0.2, 0.9, 0.3 -> its captions rank 3 and 1 -> best 1
    # video 1's column: 0.8, 0.1, 0.4 -> caption 2 ranks 2
    assert m["v2t_r1"] == 50.0 and m["v2t_mnr"] == 1.5


# ---------------------------------------------------------------- CLIP4Clip's metrics.py, transcribed

def _c4c_compute_metrics(x):
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)[:, np.newaxis]
    ind = np.where(sx - d == 0)[1]
    return {"R1": float(np.sum(ind == 0)) * 100 / len(ind), "R5": float(np.sum(ind < 5)) * 100 / len(ind),
            "R10": float(np.sum(ind < 10)) * 100 / len(ind), "MR": np.median(ind) + 1, "MeanR": np.mean(ind) + 1}


def _c4c_t2v_multi(sim_tensor):
    sim_tensor = torch.tensor(sim_tensor)
    stacked = sim_tensor.permute(1, 0, 2)
    second = torch.argsort(torch.argsort(stacked, dim=-1, descending=True), dim=-1, descending=False)
    ranks = torch.flatten(torch.diagonal(second, dim1=1, dim2=2))
    data = torch.flatten(torch.diagonal(sim_tensor, dim1=0, dim2=2))
    valid = ranks[~torch.logical_or(torch.isinf(data), torch.isnan(data))]
    return {"R1": float(torch.sum(valid < 1) * 100 / len(valid)), "R5": float(torch.sum(valid < 5) * 100 / len(valid)),
            "R10": float(torch.sum(valid < 10) * 100 / len(valid)), "MR": float(torch.median(valid + 1)),
            "MeanR": float(np.mean(valid.numpy() + 1))}


def _c4c_v2t_sim(sim_tensor):
    sim_tensor = torch.tensor(sim_tensor)
    sim_tensor[sim_tensor != sim_tensor] = float("-inf")
    values, _ = torch.max(sim_tensor, dim=1, keepdim=True)
    return torch.squeeze(values).T


def _c4c_eval(sim, caps_per_video):
    """main_task_retrieval.eval_epoch: single-sentence path, or the multi-sentence reshape to
    [videos, max captions, videos] padded with -inf."""
    if all(c == 1 for c in caps_per_video):
        return _c4c_compute_metrics(sim), _c4c_compute_metrics(sim.T)
    cut = np.cumsum(caps_per_video)
    m = max(caps_per_video)
    blocks = [np.concatenate((sim[s:e], np.full((m - e + s, sim.shape[1]), -np.inf)), axis=0)
              for s, e in zip([0, *cut[:-1]], cut)]
    stacked = np.stack(blocks, axis=0)
    return _c4c_t2v_multi(stacked), _c4c_compute_metrics(_c4c_v2t_sim(stacked).numpy())


@pytest.mark.parametrize("max_caps", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_clip4clip(max_caps, seed):
    rng = np.random.default_rng(seed)
    nv = 60
    caps = [1] * nv if max_caps == 1 else list(rng.integers(1, max_caps + 1, nv))
    qv = np.repeat(np.arange(nv), caps)
    # scores that know something (own video +1.5), random otherwise; continuous: no ties
    sim = rng.standard_normal((len(qv), nv)) + 1.5 * (qv[:, None] == np.arange(nv)[None])
    t2v, v2t = _c4c_eval(sim, caps)
    ours = retrieval_metrics(torch.tensor(sim), torch.tensor(qv))
    for k, c in (("r1", "R1"), ("r5", "R5"), ("r10", "R10"), ("mnr", "MeanR"), ("mdr", "MR")):
        assert ours[f"t2v_{k}"] == pytest.approx(t2v[c], abs=1e-4), ("t2v", k)
        assert ours[f"v2t_{k}"] == pytest.approx(v2t[c], abs=1e-4), ("v2t", k)


def test_multi_caption_t2v_median_is_the_lower_middle():
    # 4 captions over 2 videos with t2v ranks 1, 1, 2, 2: numpy would say 1.5, CLIP4Clip's torch.median 1
    sim = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.9, 0.1], [0.9, 0.2]])
    m = retrieval_metrics(sim, torch.tensor([0, 0, 1, 1]))
    assert m["t2v_mdr"] == 1.0 and m["t2v_mnr"] == 1.5


def test_ties_count_against_the_target():
    m = retrieval_metrics(torch.zeros(3, 3), torch.arange(3))
    assert m["t2v_r1"] == 0.0 and m["t2v_mdr"] == 3.0


def test_shape_mismatch_is_one_clear_error():
    with pytest.raises(ValueError, match="queries"):
        retrieval_metrics(torch.zeros(3, 3), torch.arange(2))


def test_attention_hit_by_hand():
    idx = torch.tensor([[0, 4, 8, 12], [1, 2, 3, -1]])
    w = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.25, 0.25, 0.0]])
    described = [{4, 5, 6, 12}, {3}]
    assert attention_hit(w, idx, described) == pytest.approx(((0.2 + 0.4) + 0.25) / 2)
    # uniform: 2 of 4 frames in row 0, 1 of 3 real frames in row 1
    assert attention_hit(None, idx, described) == pytest.approx((0.5 + 1 / 3) / 2)
    assert uniform_weights(idx)[1].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0])
    assert attention_hit_any(w, idx, [set(range(20)), set(range(20))]) == pytest.approx(1.0)
