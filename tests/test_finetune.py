"""End-to-end fine-tuning (finetune.py) and training on several processes (distributed.py, equivalence.py)."""
import shutil

import pytest
import torch

from teachclip_lite import features
from teachclip_lite.backbone import BackboneConfig, load_backbone
from teachclip_lite.cli import main as cli
from teachclip_lite.features import FeatureSet
from teachclip_lite.finetune import EndToEnd, attach_pixels, tune


def _subset(fs: FeatureSet, n_videos: int) -> FeatureSet:
    rows = [i for i, v in enumerate(fs.texts.video.tolist()) if v < n_videos]
    return FeatureSet(fs.videos.subset(range(n_videos)), fs.texts.subset(rows), fs.logit_scale, fs.key,
                      fs.temporal_init)


@pytest.fixture(scope="module")
def small(tiny_toy, tmp_path_factory):
    from teachclip_lite.data import load_dataset
    from teachclip_lite.video import SamplingConfig

    bb = load_backbone(BackboneConfig("toy"))
    cache = tmp_path_factory.mktemp("cache")
    fs = features.build_features(load_dataset(tiny_toy[0]), bb, SamplingConfig(8, bb.image_size), cache_dir=cache,
                                 progress=False)
    attach_pixels(fs, tiny_toy[0], bb, cache_dir=cache, progress=False)
    return fs, bb


def test_pixels_are_the_frames_the_cached_features_came_from(small):
    fs, bb = small
    assert fs.videos.pixels.dtype == torch.uint8 and fs.videos.pixels.shape[:2] == fs.videos.mask.shape
    assert fs.texts.tokens.shape[0] == len(fs.texts)
    e2e = EndToEnd(bb, torch.nn.Identity(), blocks=1)
    again = e2e.encode(fs)   # the untrained copy of CLIP sees exactly what the cache holds
    assert torch.allclose(again.videos.frames, fs.videos.frames, atol=1e-4)
    assert torch.allclose(again.texts.sentence, fs.texts.sentence, atol=1e-4)
    m = fs.texts.word_mask
    assert torch.equal(again.texts.word_mask, m) and torch.allclose(again.texts.words[m], fs.texts.words[m], atol=1e-4)
    assert fs.split("train").videos.pixels.shape[0] == len(fs.split("train").videos)


def test_tune_marks_the_last_blocks_of_each_tower():
    bb = load_backbone(BackboneConfig("toy"))
    clip = bb.model
    names = tune(clip, 1)
    assert names and all(n.startswith(("visual.transformer.resblocks.3.", "visual.ln_post", "visual.proj",
                                       "transformer.resblocks.2.", "ln_final", "text_projection")) for n in names)
    assert any(n.startswith("visual.") for n in names) and any(n.startswith("transformer.") for n in names)
    assert "logit_scale" not in tune(clip, -1) and len(tune(clip, -1)) == len(list(clip.parameters())) - 1
    assert tune(clip, 0) == []


def test_finetuning_changes_the_backbone_lowers_the_loss_and_serves_the_same_vectors(small, tmp_path):
    from teachclip_lite.encoder import load_encoder
    from teachclip_lite.student import StudentConfig
    from teachclip_lite.train import TrainConfig, train_student

    fs, bb = small
    before = {k: v.clone() for k, v in bb.model.state_dict().items()}
    cfg = TrainConfig(epochs=4, batch_size=12, finetune=1, lr=3e-3, backbone_lr_mult=0.1)
    scfg = StudentConfig(dim=bb.embed_dim, num_frames=8, logit_scale=fs.logit_scale)
    model, hist = train_student(cfg, fs.split("train"), fs.split("val"), student=scfg, backbone=bb,
                                out_dir=tmp_path / "run", progress=False)
    assert isinstance(model, EndToEnd)
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert all(torch.equal(v, before[k]) for k, v in bb.model.state_dict().items())   # the caller's CLIP is untouched
    tuned = model.clip.state_dict()
    changed = {k for k in model.tuned if not torch.equal(tuned[k], before[k].float())}
    assert changed and changed <= set(model.tuned)
    assert all(torch.equal(tuned[k], before[k].float()) for k in before if k not in model.tuned)

    # the saved student brings its CLIP blocks: the index's encoder gives the vectors the trainer evaluated
    (tmp_path / "run" / "backbone.json").write_text('{"name": "toy", "pretrained": null}')
    best = tmp_path / "run" / "best.pt"
    enc = load_encoder(model=best, frames=8)
    assert "+ft-" in enc.spec["backbone"]
    test = fs.split("test")
    seen = model.encode(test)
    v, _ = model.student.encode_video(seen.videos.frames[:1], seen.videos.mask[:1])
    served = enc.video_vector(test.videos.pixels[0], test.videos.mask[0])
    assert torch.allclose(torch.as_tensor(served), v[0], atol=1e-4)
    q = enc.text_vectors(test.texts.captions[:2])
    t = model.student.encode_text(seen.texts.sentence[:2], seen.texts.words[:2], seen.texts.word_mask[:2])
    assert torch.allclose(q, t, atol=1e-4)


def test_train_cli_finetunes_and_the_model_indexes(tiny_toy, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(features, "CACHE_DIR", tmp_path / "cache")
    shutil.copytree(tiny_toy[0], tmp_path / "data")
    (tmp_path / "poc.yaml").write_text("data: data\nout: run\nbackbone: toy\nframes: 8\nmodels: [teachclip]\n"
                                       "teachers: [xpool]\ntrain: {epochs: 1, batch_size: 8}\n")
    assert cli(["train", "--config", str(tmp_path / "poc.yaml"), "--finetune", "1"]) == 0
    model = tmp_path / "run" / "model.pt"
    blob = torch.load(model, weights_only=True)
    assert blob["tuned"]["blocks"] == 1 and blob["tuned"]["state_dict"]
    assert cli(["eval", "--model", str(model), "--data", str(tmp_path / "data")]) == 0
    assert "| teachclip |" in capsys.readouterr().out
    assert cli(["index", str(tmp_path / "data" / "videos"), "--out", str(tmp_path / "idx"), "--model", str(model)]) == 0
    assert cli(["search", str(tmp_path / "idx"), "a red circle", "-k", "2"]) == 0


def test_two_processes_train_what_one_process_trains_and_resume():
    """torchrun, 2 gloo ranks, each with half of every batch, against one process with the whole batch:
    a teacher, the taught student, and the student fine-tuning the toy CLIP end to end."""
    from teachclip_lite.equivalence import check

    out = check(world=2, finetune=True, resume=True)
    assert out["world_size"] == 2 and out["weights"] > 100
    assert out["max_param_diff"] <= 1e-4, out
    assert out["resume_diff"] <= 1e-6, out


def _gpu_check(tmp_path, *args):
    import os
    import subprocess
    import sys

    env = {**os.environ, "TEACHCLIP_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "teachclip_lite.gpu_check", "--out", str(tmp_path / "g.json"), *args],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_gpu_check_without_cuda_says_it_needs_cuda(tmp_path):
    done = _gpu_check(tmp_path)
    assert done.returncode == 0 and "needs a CUDA GPU" in done.stderr and not (tmp_path / "g.json").exists()


def test_gpu_check_runs_its_trainings_and_writes_the_record(tmp_path):
    """The same code path, tiny and on CPU (--allow-cpu): one process, then torchrun."""
    import json

    done = _gpu_check(tmp_path, "--allow-cpu", "--backbone", "toy", "--videos", "16", "--frames", "4",
                      "--steps", "3", "--batch", "16", "--finetune", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    rec = json.loads((tmp_path / "g.json").read_text())
    for r in (rec, rec["torchrun"]):
        assert {"device", "steps", "samples_per_s", "peak_memory_gb", "world_size", "loss_first", "loss_last"} <= set(r)
        assert r["steps"] >= 3 and r["samples_per_s"] > 0 and r["world_size"] == 1
    assert rec["loss_first"] == pytest.approx(rec["torchrun"]["loss_first"], abs=1e-4)


def test_index_shards_over_torchrun_ranks_and_gives_the_same_index(tiny_toy, tmp_path):
    import os
    import subprocess
    import sys

    import numpy as np

    from teachclip_lite.index import Index

    videos = tiny_toy[0] / "videos"
    base = ["-m", "teachclip_lite", "index", str(videos), "--toy", "--precision", "fp32", "--out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *base, str(tmp_path / "one")], capture_output=True, text=True, env=env)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          *base, str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("indexed ") == 1   # rank 0 reports
    a, b = Index.load(tmp_path / "one"), Index.load(tmp_path / "two")
    assert a.ids == b.ids and len(a.ids) == 22
    assert np.allclose(np.asarray(a.vectors, np.float32), np.asarray(b.vectors, np.float32), atol=1e-6)
