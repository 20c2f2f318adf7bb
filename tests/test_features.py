import os
import signal
import subprocess
import sys
import time

import torch

from teachclip_lite.backbone import BackboneConfig, load_backbone
from teachclip_lite.data import load_dataset
from teachclip_lite.features import build_features
from teachclip_lite.video import SamplingConfig


def _build(root, cache, **kw):
    bb = load_backbone(BackboneConfig("toy", device="cpu"))
    return build_features(load_dataset(root), bb, SamplingConfig(6, bb.image_size), patches=True,
                          cache_dir=cache, progress=False, shard_size=4, **kw)


def _same(a, b):
    assert a.videos.ids == b.videos.ids and a.texts.captions == b.texts.captions
    for x, y in [(a.videos.frames, b.videos.frames), (a.videos.mask, b.videos.mask),
                 (a.videos.indices, b.videos.indices), (a.videos.patches, b.videos.patches),
                 (a.texts.sentence, b.texts.sentence), (a.texts.words, b.texts.words),
                 (a.texts.word_mask, b.texts.word_mask), (a.texts.video, b.texts.video)]:
        assert torch.equal(x, y)


def test_cache_roundtrip_is_exact_and_keyed(tiny_toy, tmp_path):
    root, cfg = tiny_toy
    first = _build(root, tmp_path)
    n = cfg.n_train + cfg.n_val + cfg.n_test
    assert first.videos.frames.shape[:2] == (n, 6) and first.videos.patches.dtype == torch.float16
    shards = sorted(tmp_path.rglob("videos-*.safetensors"))
    mtimes = [p.stat().st_mtime_ns for p in shards]
    second = _build(root, tmp_path)  # from disk
    _same(first, second)
    assert [p.stat().st_mtime_ns for p in shards] == mtimes
    # another sampling is another cache entry, never the stale one
    bb = load_backbone(BackboneConfig("toy", device="cpu"))
    other = build_features(load_dataset(root), bb, SamplingConfig(4, bb.image_size), cache_dir=tmp_path,
                           progress=False)
    assert other.videos.frames.shape[1] == 4 and len(list(tmp_path.iterdir())) == 2
    test = first.split("test")
    assert len(test.videos) == len(test.texts) == cfg.n_test


SCRIPT = """
import sys, torch
from teachclip_lite.backbone import BackboneConfig, load_backbone
from teachclip_lite.data import load_dataset
from teachclip_lite.features import build_features
from teachclip_lite.video import SamplingConfig
import teachclip_lite.features as F
torch.set_num_threads(1)
orig = F.encode_videos
def slow(*a, **k):
    out = orig(*a, **k)
    print("shard", flush=True)
    import time; time.sleep(0.5)
    return out
F.encode_videos = slow
bb = load_backbone(BackboneConfig("toy", device="cpu"))
build_features(load_dataset(sys.argv[1]), bb, SamplingConfig(6, bb.image_size), patches=True,
               cache_dir=sys.argv[2], progress=False, shard_size=4)
"""


def test_killed_build_resumes_to_the_same_result(tiny_toy, tmp_path):
    root, _ = tiny_toy
    cache = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(root), str(cache)], stdout=subprocess.PIPE, text=True)
    for _ in range(2):  # let two shards land, then kill without warning
        assert p.stdout.readline().strip() == "shard"
    time.sleep(0.2)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    done = list(cache.rglob("videos-*.safetensors"))
    assert 1 <= len(done) < 6
    torch.set_num_threads(1)   # as the killed writer: encoding with another thread count may round differently
    resumed = _build(root, cache)
    assert not [*cache.rglob(".*.tmp"), *cache.rglob(".tmp-*")]   # no temp file of any writer is left
    _same(resumed, _build(root, tmp_path / "clean"))
