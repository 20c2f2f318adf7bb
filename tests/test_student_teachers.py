"""Student and teachers: shapes, normalisation, masking, chunking, persistence."""
import pytest
import torch
import torch.nn.functional as F

from teachclip_lite.features import TextFeatures, VideoFeatures
from teachclip_lite.student import Student, StudentConfig, build_student
from teachclip_lite.teachers import TEACHERS, EnsembleTeacher, build_teacher, load_teacher, save_teacher

D, T, L, P = 16, 6, 5, 4


def _batch(b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(b, T, D, generator=g)
    mask = torch.ones(b, T, dtype=torch.bool)
    mask[0, 4:] = False
    texts = TextFeatures([f"c{i}" for i in range(b)], torch.arange(b), ["train"] * b, torch.randn(b, D, generator=g),
                         torch.randn(b, L, D, generator=g), torch.arange(L)[None].expand(b, L) < 4)
    videos = VideoFeatures([f"v{i}" for i in range(b)], frames, mask, torch.arange(T).repeat(b, 1),
                           torch.randn(b, T, P, D, generator=g).half())
    return texts, videos


@pytest.mark.parametrize("kind", ["meanP", "seqTransf", "afa", "seqTransf_afa"])
def test_student_one_normalised_vector_and_padding_is_ignored(kind):
    torch.manual_seed(0)
    s = build_student(StudentConfig(kind=kind, dim=D, num_frames=T, layers=1)).eval()
    _, v = _batch()
    out, w = s.encode_video(v.frames, v.mask)
    assert out.shape == (5, D)
    assert torch.allclose(out.norm(dim=-1), torch.ones(5), atol=1e-5)
    frames2 = v.frames.clone()
    frames2[0, 4:] = 100.0                     # padded frames must not matter
    out2, _ = s.encode_video(frames2, v.mask)
    assert torch.allclose(out, out2, atol=1e-5)
    assert (w is None) == (kind not in ("afa", "seqTransf_afa"))
    t = s.encode_text(torch.randn(3, D), torch.randn(3, L, D), torch.ones(3, L, dtype=torch.bool))
    assert torch.allclose(t.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_meanp_at_init_is_clip4clip_mean_pooling():
    s = Student(StudentConfig(kind="meanP", dim=D, num_frames=T))
    _, v = _batch()
    f = F.normalize(v.frames, dim=-1)
    expect = F.normalize(f[0, :4].mean(0), dim=0)   # video 0 has 4 real frames
    assert torch.allclose(s.encode_video(v.frames, v.mask)[0][0], expect, atol=1e-6)


def test_afa_weights_are_temperature_softmax_of_scores():
    torch.manual_seed(1)
    s = Student(StudentConfig(kind="afa", dim=D, num_frames=T, afa_temperature=0.1))
    _, v = _batch()
    feats = s.frame_features(v.frames, v.mask)
    scores = s.frame_scores(feats, v.mask)
    _, w = s.encode_video(v.frames, v.mask)
    assert torch.allclose(w, (scores / 0.1).softmax(-1), atol=1e-6)
    assert torch.allclose(w.sum(-1), torch.ones(5)) and (w[0, 4:] == 0).all()
    assert torch.allclose(s.frame_weights(v.frames, v.mask, temperature=1.0), scores.softmax(-1), atol=1e-6)
    vec = F.normalize((w[..., None] * F.normalize(feats, dim=-1)).sum(1), dim=-1)   # frames normalised, then pooled
    assert torch.allclose(s.encode_video(v.frames, v.mask)[0], vec, atol=1e-6)


def _official_seqtransf_afa(s, frames):
    """TeachCLIP's _loose_similarity (seqTransf + return_fine), written out from modeling.py with the
    student's own weights: position add, CLIP's pre-LN residual blocks, residual add; Frameweight from
    the un-normalised output; frames normalised; softmax(Frameweight / 0.1) pooling."""
    x0 = frames
    x = x0 + s.temporal.position[:frames.shape[1]]
    for blk in s.temporal.transformer.resblocks:          # open_clip blocks are batch-first: x is [B, T, D]
        h = blk.ln_1(x)
        x = x + blk.attn(h, h, h, need_weights=False)[0]
        x = x + blk.mlp(blk.ln_2(x))
    x = x + x0
    fw = s.afa[2](torch.relu(s.afa[0](x)))                # [B, T, 1]
    xn = x / x.norm(dim=-1, keepdim=True)
    v = (xn * fw.div(0.1).softmax(1)).sum(1)
    return v / v.norm(dim=-1, keepdim=True), fw.squeeze(-1).softmax(1)


def test_seqtransf_afa_is_the_official_student():
    torch.manual_seed(5)
    s = Student(StudentConfig(kind="seqTransf_afa", dim=D, num_frames=T, layers=2, heads=2, adapter="none")).eval()
    _, v = _batch()
    full = torch.ones(5, T, dtype=torch.bool)              # the official code has no padding
    v_ours, _ = s.encode_video(v.frames, full)
    v_off, w_off = _official_seqtransf_afa(s, v.frames)
    assert torch.allclose(v_ours, v_off, atol=1e-5)
    assert torch.allclose(s.frame_weights(v.frames, full, temperature=1.0), w_off, atol=1e-5)
    # AFA reads the post-temporal frames before normalisation: scaling a clip's frames changes its scores
    feats = s.frame_features(v.frames, full)
    assert not torch.allclose(feats.norm(dim=-1), torch.ones(5, T))


def test_temporal_module_starts_from_the_backbone_text_transformer():
    import open_clip

    from teachclip_lite import backbone  # noqa: F401  (registers the toy config with open_clip)
    from teachclip_lite.student import temporal_init

    clip = open_clip.create_model("teachclip-toy")
    init = temporal_init(clip)
    assert init is not None and init["heads"] == 4 and len(init["blocks"]) == 3   # the toy text has 3 layers
    s = build_student(StudentConfig(kind="seqTransf_afa", dim=64, num_frames=12), init)
    assert s.cfg.heads == 4 and s.cfg.act == init["act"]
    for i in range(3):
        for k, val in clip.transformer.resblocks[i].state_dict().items():
            assert torch.equal(s.temporal.transformer.resblocks[i].state_dict()[k], val), (i, k)
    assert torch.equal(s.temporal.position.detach(), clip.positional_embedding[:12].detach())
    # the fourth block has no text counterpart: CLIP4Clip's init (normal(0, 0.02) linear weights, zero biases)
    fc = s.temporal.transformer.resblocks[3].mlp.c_fc
    assert fc.bias.abs().max() == 0 and 0.01 < fc.weight.std() < 0.03


def test_student_save_load_roundtrip(tmp_path):
    torch.manual_seed(2)
    s = Student(StudentConfig(kind="seqTransf", dim=D, num_frames=T, layers=2, afa_temperature=0.2)).eval()
    s.save(tmp_path / "s.pt")
    r = Student.load(tmp_path / "s.pt").eval()
    assert r.cfg == s.cfg
    _, v = _batch()
    assert torch.equal(s.encode_video(v.frames, v.mask)[0], r.encode_video(v.frames, v.mask)[0])
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        Student.load(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="kind"):
        StudentConfig(kind="maxP")


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_similarity_relevance_chunking(name):
    torch.manual_seed(3)
    t = build_teacher(name, D, T)
    texts, videos = _batch(7)
    sim = t.similarity(texts, videos)
    assert sim.shape == (7, 7)
    assert torch.allclose(sim, t.similarity(texts, videos, chunk=3), atol=1e-5)
    rel = t.frame_relevance(texts, videos)
    assert rel.shape == (7, T) and torch.allclose(rel.sum(-1), torch.ones(7), atol=1e-5)
    assert (rel[0, 4:] == 0).all()
    assert t.bytes_per_video(12, 512, 49) >= 12 * 512 * 4 > 512 * 4   # more than the student's one vector
    with pytest.raises(ValueError, match="pairs caption i"):
        t.frame_relevance(texts, videos.subset([0, 1]))


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_relevance_finds_the_frame_the_caption_shows(name):
    t = build_teacher(name, D, T)
    texts, videos = _batch(4)
    videos.frames[:, 2] = texts.sentence * 3   # frame 2 of each video is its caption
    videos.patches[:, 2] = texts.sentence[:, None].half()
    assert (t.frame_relevance(texts, videos).argmax(-1) == 2).all()


def test_ts2net_needs_patches():
    t = build_teacher("ts2net", D, T)
    texts, videos = _batch()
    videos.patches = None
    with pytest.raises(ValueError, match="patch"):
        t.similarity(texts, videos)   # the token shift itself: tests/test_teachers_official.py


def test_ensemble_averages_and_teacher_roundtrip(tmp_path):
    torch.manual_seed(4)
    a, b = build_teacher("xpool", D, T), build_teacher("xclip", D, T)
    texts, videos = _batch()
    e = EnsembleTeacher([a, b])
    assert torch.allclose(e.similarity(texts, videos), (a.similarity(texts, videos) + b.similarity(texts, videos)) / 2)
    save_teacher(b, tmp_path / "x.pt")
    assert torch.allclose(load_teacher(tmp_path / "x.pt").similarity(texts, videos), b.similarity(texts, videos))
    with pytest.raises(ValueError, match="unknown teacher"):
        build_teacher("clip4clip", D)
