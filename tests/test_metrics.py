"""Retrieval metrics against a hand-made ranking; attention_hit against hand-placed weights."""
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
