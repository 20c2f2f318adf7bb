import time

import pytest
import torch

from teachclip_lite import backbone as bb
from teachclip_lite.backbone import (BackboneConfig, BackboneError, ToyClipConfig, frame_caption_recall, load_backbone,
                                     pretrain_toy_clip)


@pytest.fixture(scope="module")
def toy():
    return load_backbone(BackboneConfig("toy", device="cpu"))


def test_toy_backbone_shapes(toy):
    frames = torch.randint(0, 255, (5, 3, toy.image_size, toy.image_size), dtype=torch.uint8)
    emb, patches = toy.encode_frames(frames, patches=True)
    assert emb.shape == (5, toy.embed_dim) and patches.shape[0] == 5 and patches.shape[2] == toy.embed_dim
    emb2, none = toy.encode_frames(frames)
    assert none is None and torch.allclose(emb, emb2, atol=1e-5)
    sent, words, mask = toy.encode_text(["a red circle moving left", "static noise"])
    assert sent.shape == (2, toy.embed_dim) and words.shape == (2, toy.context_length, toy.embed_dim)
    assert mask.sum(1).tolist() == [toy.count_tokens("a red circle moving left"), toy.count_tokens("static noise")]
    # the sentence feature is CLIP's own: open_clip's encode_text gives the same vector
    ref = toy.model.encode_text(toy.tokenize(["a red circle moving left"]))
    assert torch.allclose(sent[0], ref[0], atol=1e-5)
    assert torch.allclose(sent[1], words[1, mask[1].sum() - 1], atol=1e-6)
    # the tower runs only up to the batch's last EOT: the kept tokens equal the full-context ones, the rest is zero
    from teachclip_lite.backbone import text_tokens
    with torch.no_grad():
        _, full, _ = text_tokens(toy.model, toy.tokenize(["a red circle moving left", "static noise"]))
    assert torch.allclose(words[mask], full[mask], atol=1e-5) and not words[:, mask.sum(1).max():].any()


def test_local_checkpoint_path(tmp_path, toy):
    path = tmp_path / "my_toy.pt"
    torch.save(toy.model.state_dict(), path)
    other = load_backbone(BackboneConfig("toy", str(path), device="cpu"))
    x = torch.randint(0, 255, (2, 3, toy.image_size, toy.image_size), dtype=torch.uint8)
    assert torch.allclose(other.encode_frames(x)[0], toy.encode_frames(x)[0], atol=1e-6)
    assert other.key != toy.key or path.read_bytes() == bb.TOY_CHECKPOINT.read_bytes()


def test_offline_pretrained_tag_fails_fast(monkeypatch):
    monkeypatch.setattr(bb, "_cached_weights", lambda name, tag: None)
    monkeypatch.setattr(bb, "_reachable", lambda host, timeout=4.0: False)
    t0 = time.perf_counter()
    with pytest.raises(BackboneError) as e:
        load_backbone(BackboneConfig("ViT-B-32", "openai"))
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert "\n" not in msg and "offline" in msg and "--toy" in msg and "checkpoint" in msg


def test_offline_probe_really_times_out(monkeypatch):
    """No monkeypatched network: on this offline machine the probe must give up quickly."""
    monkeypatch.setattr(bb, "_cached_weights", lambda name, tag: None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.perf_counter()
    try:
        bb.resolve_weights(BackboneConfig("ViT-B-32", "openai"))
    except BackboneError:
        pass
    assert time.perf_counter() - t0 < 10


def test_bad_names_and_paths():
    with pytest.raises(BackboneError, match="no pretrained tag 'nope'"):
        load_backbone(BackboneConfig("ViT-B-32", "nope"))
    with pytest.raises(BackboneError, match="missing.pt: checkpoint file not found"):
        load_backbone(BackboneConfig("ViT-B-32", "/tmp/missing.pt"))
    with pytest.raises(BackboneError, match="unknown open_clip model"):
        load_backbone(BackboneConfig("ViT-Z-99"))


def test_committed_toy_clip_beats_chance_on_a_fresh_world(tiny_toy, toy):
    """Held out twice over: another seed's world, frames the checkpoint never saw."""
    root, _ = tiny_toy
    frames, caps, _ = bb._toy_frame_data(root, "test", ToyClipConfig(), toy.image_size)
    m = frame_caption_recall(toy.model, toy.tokenizer, frames, caps, toy.mean, toy.std)
    assert m["frame_to_caption_r1"] > 10 * m["chance_r1"]


@pytest.mark.slow
def test_toy_clip_recipe_learns_at_small_scale(tiny_toy):
    root, _ = tiny_toy
    cfg = ToyClipConfig(steps=60, batch_size=32, warmup=0.15, eval_every=60, frames_per_video=8)
    m = pretrain_toy_clip(root, out=None, cfg=cfg, progress=False)
    assert m["frame_to_caption_r1"] > 2 * m["chance_r1"]
