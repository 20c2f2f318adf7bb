import csv
import json

import numpy as np

from teachclip_lite.toy import ToyConfig, caption_frames, event_frames, frame_captions, generate, load_truth, plan_world
from teachclip_lite.video import read_all_frames


def test_world_layout_and_ground_truth(tiny_toy):
    root, cfg = tiny_toy
    rows = list(csv.DictReader(open(root / "captions.csv")))
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    truth = load_truth(root)
    assert len(truth) == cfg.n_train + cfg.n_val + cfg.n_test
    for split in ("val", "test"):  # MSR-VTT 1k-A in miniature: one query per video
        vids = [r["video"] for r in rows if r["split"] == split]
        assert len(vids) == len(set(vids))
    for rec in truth.values():
        n = rec["num_frames"]
        assert (root / rec["video"]).is_file()
        any_frames = set(event_frames(rec))
        assert 0 < len(any_frames) < n  # filler frames exist between events
        for c in rec["captions"]:
            assert set(c["frames"]) <= any_frames and c["frames"]
            for e in c["events"]:
                ev = rec["events"][e]
                assert ev["colour"] in c["caption"] and ev["shape"] in c["caption"]
        caps = frame_captions(rec)
        assert len(caps) == n and all(caps)
    assert caption_frames(truth)


def test_siblings_swap_colours_only():
    cfg = ToyConfig(n_train=60, n_val=0, n_test=0, sibling_frac=1.0)
    vids = {v.video: v for v in plan_world(cfg)}
    pairs = [(v, vids[v.sibling]) for v in vids.values() if v.sibling]
    assert pairs
    for a, b in pairs:
        assert [e.shape for e in a.events] == [e.shape for e in b.events]
        assert sorted(e.colour for e in a.events) == sorted(e.colour for e in b.events)
        assert [e.colour for e in a.events] != [e.colour for e in b.events]


def test_generator_is_deterministic(tmp_path):
    cfg = ToyConfig(seed=11, n_train=3, n_val=1, n_test=2, workers=1)
    a, b = generate(tmp_path / "a", cfg, progress=False), generate(tmp_path / "b", cfg, progress=False)
    for name in ("captions.csv", "truth.jsonl", "frame_captions.csv"):
        assert (a / name).read_text() == (b / name).read_text()
    for p in sorted((a / "videos").glob("*.mp4")):
        assert np.array_equal(read_all_frames(p), read_all_frames(b / "videos" / p.name))
    c = generate(tmp_path / "c", ToyConfig(seed=12, n_train=3, n_val=1, n_test=2, workers=1), progress=False)
    assert (a / "captions.csv").read_text() != (c / "captions.csv").read_text()
    meta = json.loads((a / "meta.json").read_text())
    assert meta["videos"] == 6 and meta["config"]["seed"] == 11


def test_generate_resumes_and_skips_finished(tmp_path):
    cfg = ToyConfig(seed=5, n_train=2, n_val=0, n_test=1, workers=1)
    out = generate(tmp_path / "w", cfg, progress=False)
    victim = sorted((out / "videos").glob("*.mp4"))[0]
    mtime = victim.stat().st_mtime_ns
    (out / ".complete").unlink()          # as if killed before the end
    generate(out, cfg, progress=False)
    assert victim.stat().st_mtime_ns == mtime  # finished clips are not rewritten
    assert (out / ".complete").exists()


def test_cuts_are_short_uncaptioned_shots_in_the_captioned_vocabulary():
    from teachclip_lite.toy import COLOURS, to_record
    cfg = ToyConfig(n_train=40, n_val=10, n_test=10, cuts=1, cut_frames=(3, 4), sibling_frac=0.5)
    world = plan_world(cfg)
    for v in world:
        cuts = [i for i, e in enumerate(v.events) if e.cut]
        assert len(cuts) == 1 and v.events[cuts[0]].decoy
        cut = v.events[cuts[0]]
        assert cut.colour in COLOURS and 3 <= cut.end - cut.start <= 4
        for c in v.captions:
            assert cuts[0] not in c["events"]
        rec = to_record(v)
        assert rec["events"][cuts[0]]["cut"] is True
        assert not set(range(cut.start, cut.end)) & set(event_frames(rec))
    plain = plan_world(ToyConfig(n_train=10, n_val=2, n_test=2))
    assert not any("cut" in e for v in plain for e in to_record(v)["events"])


def test_unique_queries_single_out_their_clip():
    import pytest
    from teachclip_lite.toy import _query_key
    cfg = ToyConfig(n_train=20, n_val=30, n_test=120, events=(1, 1), query_events=1, sibling_frac=0.5,
                    unique_queries=True)
    world = plan_world(cfg)
    for split, n in (("val", 30), ("test", 120)):
        keys = [_query_key(v) for v in world if v.split == split]
        assert len(keys) == n and len(set(keys)) == n
    loose = [_query_key(v) for v in plan_world(ToyConfig(n_train=0, n_val=0, n_test=120, events=(1, 1),
                                                         query_events=1)) if v.split == "test"]
    assert len(set(loose)) < len(loose)    # without the option, one-event queries repeat
    with pytest.raises(ValueError, match="unique_queries"):
        plan_world(ToyConfig(n_train=0, n_val=0, n_test=241, events=(1, 1), query_events=1, unique_queries=True))
