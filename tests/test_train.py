"""The trainer: batches, determinism, best checkpoint, resume, teaching reaches the student."""
import math

import pytest
import torch

from teachclip_lite.experiments import synthetic_features
from teachclip_lite.student import Student, StudentConfig
from teachclip_lite.teachers import Teacher
from teachclip_lite.train import TrainConfig, epoch_batches, evaluate_student, train_student, train_teacher, warmup_cosine


@pytest.fixture
def data():
    fs, _ = synthetic_features(n_train=60, n_val=20, n_test=20, dim=16, seed=1)
    return fs.split("train"), fs.split("val")


CFG = TrainConfig(epochs=3, batch_size=32, lr=3e-3)


def test_warmup_cosine_is_bertadams_schedule():
    """TeachCLIP's BertAdam updates with lr * f(step / t_total) for step = 1..t_total, where f is linear up to
    `warmup` and 0.5 (1 + cos(pi x)) after it; LambdaLR asks for step - 1."""
    total, warmup = 50, 0.1
    for step in range(1, total + 1):
        x = step / total
        want = x / warmup if x < warmup else 0.5 * (1 + math.cos(math.pi * x))
        assert warmup_cosine(step - 1, total, warmup) == pytest.approx(want)
    assert warmup_cosine(total - 1, total, warmup) == pytest.approx(0.0)


def test_epoch_batches_cover_every_caption_once_without_repeated_videos():
    video = torch.tensor([0, 0, 1, 1, 2, 3, 3, 3, 4, 5, 5])
    b = epoch_batches(video, 3, seed=0, epoch=0)
    rows = torch.cat(b)
    # round 0 has 6 videos, round 1 has 4 (split 2 + 2), round 2 only video 3: skipped (no negatives)
    assert len(rows) == 10 and len(set(rows.tolist())) == 10 and sorted(len(x) for x in b) == [2, 2, 3, 3]
    assert all(len(set(video[x].tolist())) == len(x) for x in b)
    assert [x.tolist() for x in b] == [x.tolist() for x in epoch_batches(video, 3, 0, 0)]
    assert [x.tolist() for x in b] != [x.tolist() for x in epoch_batches(video, 3, 0, 1)]


def test_same_seed_same_numbers(data):
    tr, va = data
    s1, h1 = train_student(CFG, tr, va, progress=False)
    s2, h2 = train_student(CFG, tr, va, progress=False)
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(h1) == strip(h2)
    assert all(torch.equal(a, b) for a, b in zip(s1.state_dict().values(), s2.state_dict().values()))
    _, h3 = train_student(TrainConfig(**{**CFG.__dict__, "seed": 5}), tr, va, progress=False)
    assert strip(h3) != strip(h1)
    assert {"nce", "loss", "val_r1", "lr", "best"} <= set(h1[0])


def test_keeps_best_validation_checkpoint_and_resumes_exactly(data, tmp_path):
    tr, va = data
    full, h_full = train_student(CFG, tr, va, out_dir=tmp_path / "a", progress=False)
    assert evaluate_student(full, va)[0]["t2v_r1"] == max(e["val_r1"] for e in h_full)
    best = Student.load(tmp_path / "a" / "best.pt")
    assert all(torch.equal(a, b) for a, b in zip(best.state_dict().values(), full.state_dict().values()))
    # an interrupted run (one epoch per call) ends where the uninterrupted one did
    for _ in range(3):
        part, h_part = train_student(CFG, tr, va, out_dir=tmp_path / "b", progress=False, stop_after=1)
    assert [e["loss"] for e in h_part] == [e["loss"] for e in h_full]
    assert all(torch.equal(a, b) for a, b in zip(part.state_dict().values(), full.state_dict().values()))
    with pytest.raises(ValueError, match="cannot resume"):
        train_student(TrainConfig(epochs=4), tr, va, out_dir=tmp_path / "b", progress=False)


class FrameTeacher(Teacher):
    """A fake teacher: every caption is about frame 3; logits are the identity."""

    name = "frame3"

    def logits(self, sentence, words, word_mask, frames, mask, patches=None):
        return torch.eye(len(sentence)) * 10

    def frame_relevance(self, texts, videos, chunk=1024):
        r = torch.zeros(len(texts), videos.frames.shape[1])
        r[:, 3] = 1
        return r


def test_fine_teaching_moves_afa_onto_the_taught_frame(data, tmp_path):
    tr, va = data
    for fs in (tr, va):               # AFA reads content, not position: mark frame 3 so it can be found
        fs.videos.frames = fs.videos.frames.clone()
        fs.videos.frames[:, 3] += 2.0
    cfg = TrainConfig(epochs=10, batch_size=32, weights=(0.0, 0.0, 1.0))  # the fine channel alone
    student, hist = train_student(cfg, tr, va, teachers=[FrameTeacher(16)], progress=False, out_dir=tmp_path)
    # the last epoch's weights (the returned best-validation-R@1 epoch says nothing about the fine channel alone)
    student.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False)["model"])
    w = student.frame_weights(va.videos.frames, va.videos.mask, temperature=1.0)
    assert w[:, 3].mean() > 0.5 and hist[-1]["fine"] < hist[0]["fine"] / 2
    with pytest.raises(ValueError, match="AFA"):
        train_student(cfg, tr, va, teachers=[FrameTeacher(16)], progress=False,
                      student=StudentConfig(kind="meanP", dim=16))

    class Unused(FrameTeacher):
        def frame_relevance(self, texts, videos, chunk=1024):
            raise AssertionError("a finished run asked its teacher again")

    # the finished run loads its best checkpoint without the teachers' targets (they are only for training)
    again, _ = train_student(cfg, tr, va, teachers=[Unused(16)], progress=False, out_dir=tmp_path)
    assert torch.equal(again.frame_weights(va.videos.frames, va.videos.mask),
                       Student.load(tmp_path / "best.pt").frame_weights(va.videos.frames, va.videos.mask))


def test_teacher_training_improves_on_its_start(data):
    tr, va = data
    t, hist = train_teacher(TrainConfig(epochs=4, batch_size=32, lr=3e-3), tr, va, "xpool", progress=False)
    assert hist[-1]["nce"] < hist[0]["nce"]
    assert t.similarity(va.texts, va.videos).shape == (len(va.texts), len(va.videos))


def test_recombine_teaches_on_spliced_clips_the_captions_never_cover(data):
    """TrainConfig.recombine: the teacher scores, online, clips spliced from two batch videos; the student's
    coarse loss sees them as extra columns while its InfoNCE stays on the captioned pairs."""
    tr, va = data
    teacher, _ = train_teacher(TrainConfig(epochs=2, batch_size=32, lr=3e-3), tr, va, "xclip", progress=False)
    seen = []
    logits = teacher.logits

    def spy(sentence, words, word_mask, frames, mask, patches=None):
        seen.append((len(sentence), len(frames)))
        return logits(sentence, words, word_mask, frames, mask, patches)

    teacher.logits = spy
    cfg = TrainConfig(epochs=2, batch_size=32, lr=3e-3, weights=(1.0, 1.0, 0.0))
    plain, h0 = train_student(cfg, tr, va, teachers=[teacher], progress=False)
    assert not seen                                              # off by default: the paper's recipe
    mixed, h1 = train_student(TrainConfig(**{**cfg.__dict__, "recombine": 0.25}), tr, va, teachers=[teacher],
                              progress=False)
    assert seen and all(k == max(1, round(0.25 * b)) for b, k in seen)
    assert h1[-1]["coarse"] != h0[-1]["coarse"] and math.isfinite(h1[-1]["loss"])
    with pytest.raises(ValueError, match="recombine"):
        TrainConfig(recombine=2)


def test_splice_takes_the_first_frames_of_one_clip_and_the_rest_of_the_next():
    from teachclip_lite.train import splice, splice_cut

    x = torch.arange(3)[:, None].expand(3, 6)          # clip i's frames all read i
    assert splice(x, 2, 4).tolist() == [[0, 0, 0, 0, 1, 1], [1, 1, 1, 1, 2, 2]]
    assert splice(x, 3, 2)[2].tolist() == [2, 2, 0, 0, 0, 0]   # the last clip wraps to the first
    assert splice_cut(0.5, 12) == 6 and splice_cut(0.01, 12) == 1
    torch.manual_seed(0)
    cuts = [splice_cut(0.0, 12) for _ in range(50)]
    assert set(cuts) <= set(range(1, 12)) and len(set(cuts)) > 5
    torch.manual_seed(0)
    assert [splice_cut(0.0, 12) for _ in range(50)] == cuts   # seeded: reproducible
    with pytest.raises(ValueError, match="recombine_cut"):
        TrainConfig(recombine_cut=1.0)
