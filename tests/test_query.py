"""The query side (query.py): shared by the student and every teacher, starts as plain CLIP."""
import pytest
import torch

from teachclip_lite.query import QueryEncoder
from teachclip_lite.student import StudentConfig, build_student
from teachclip_lite.teachers import TEACHERS, build_teacher, load_teacher, save_teacher
from teachclip_lite.toy import ToyConfig, plan_world

D, T, L, P = 16, 6, 5, 4


def _texts(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(L)[None].expand(b, L) < torch.tensor([5, 4, 3, 2])[:b, None]
    return torch.randn(b, D, generator=g), torch.randn(b, L, D, generator=g), mask


def test_word_query_starts_as_the_sentence_and_ignores_padding():
    s, w, m = _texts()
    q = QueryEncoder(D, "words")
    out, words = q(s, w, m)
    assert torch.allclose(out, s, atol=1e-6) and torch.allclose(words, w, atol=1e-6)   # zero-init: identity
    for p in q.parameters():   # once trained, padded words must still not matter
        torch.nn.init.normal_(p, std=0.3)
    out, _ = q(s, w, m)
    w2 = w.clone()
    w2[~m] = 50.0
    out2, _ = q(s, w2, m)
    assert torch.allclose(out, out2, atol=1e-5)
    assert not torch.allclose(out, s)


def test_word_query_needs_words():
    st = build_student(StudentConfig(dim=D, num_frames=T, layers=1, query="words"))
    assert st.needs_words
    with pytest.raises(ValueError, match="word tokens"):
        st.encode_text(torch.randn(2, D))
    with pytest.raises(ValueError, match="query"):
        StudentConfig(query="tokens")


@pytest.mark.parametrize("name", TEACHERS)
def test_teachers_take_the_same_query_side_and_persist_it(name, tmp_path):
    torch.manual_seed(0)
    t = build_teacher(name, D, T, query="words", layers=1) if name != "xpool" else build_teacher(name, D, T, query="words")
    assert isinstance(t.query, QueryEncoder)
    for p in t.query.parameters():
        torch.nn.init.normal_(p, std=0.3)
    s, w, m = _texts()
    frames, fmask = torch.randn(4, T, D), torch.ones(4, T, dtype=torch.bool)
    patches = torch.randn(4, T, P, D).half()
    t.eval()
    kw = {"query": "words"} if name == "xpool" else {"query": "words", "layers": 1}
    save_teacher(t, tmp_path / "t.pt", **kw)
    t2 = load_teacher(tmp_path / "t.pt").eval()
    a = t.logits(s, w, m, frames, fmask, patches)
    assert torch.allclose(a, t2.logits(s, w, m, frames, fmask, patches), atol=1e-5)
    plain = build_teacher(name, D, T, **({} if name == "xpool" else {"layers": 1}))
    assert plain.query is None


def test_decoys_are_never_described_and_keep_their_colour_in_siblings():
    world = plan_world(ToyConfig(n_train=40, n_val=10, n_test=10, decoys=1, sibling_frac=1.0))
    by = {v.video: v for v in world}
    for v in world:
        decoys = [i for i, e in enumerate(v.events) if e.decoy]
        assert len(decoys) == 1
        for c in v.captions:
            assert not set(c["events"]) & set(decoys)
            assert v.events[decoys[0]].colour not in c["caption"]
        if v.sibling:
            sib = by[v.sibling]
            assert [e.decoy for e in sib.events] == [e.decoy for e in v.events]
            assert sib.events[decoys[0]].colour == v.events[decoys[0]].colour
    plain = plan_world(ToyConfig(n_train=40, n_val=10, n_test=10))
    assert not any(e.decoy for v in plain for e in v.events)


def test_a_word_query_student_trains_and_evaluates():
    from teachclip_lite.experiments import synthetic_features
    from teachclip_lite.train import TrainConfig, evaluate_student, train_student

    fs, _ = synthetic_features(n_train=60, n_val=20, n_test=20, dim=D, num_frames=T)
    cfg = StudentConfig(dim=D, num_frames=T, layers=1, query="words")
    model, hist = train_student(TrainConfig(epochs=2, batch_size=32), fs.split("train"), fs.split("val"),
                                student=cfg, progress=False)
    assert len(hist) == 2 and model.query is not None
    before = model.query.block.attn.out_proj.weight.abs().sum()
    assert before > 0   # the block trained away from its zero init
    metrics = evaluate_student(model, fs.split("test"))[0]
    assert 0 <= metrics["t2v_r1"] <= 100
