"""bench.py: the quick run writes every JSON key of the benchmark issue; the timed code computes what it claims.

No timing is asserted here: speed is measured by `make bench` only.
"""
import json

import pytest
import torch

from teachclip_lite import bench
from teachclip_lite.experiments import ALL_MODELS, METRICS
from teachclip_lite.features import TextFeatures, VideoFeatures
from teachclip_lite.search import teacher_search
from teachclip_lite.teachers import build_teacher

AFA_MODELS = {"afa", "afa_nce02", "seqTransf_afa", "teachclip_coarse", "teachclip_fine", "teachclip"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    assert bench.main(["--quick", "--features", "synthetic", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_quick_bench_writes_the_issue_keys(quick_run):
    r = quick_run
    assert {"quality", "attention_hit_uniform", "attention_hit_any_uniform", "efficiency",
            "storage_bytes_per_video", "flops_per_query", "paper_scale", "machine", "date", "loss_choice"} <= set(r)
    assert r["loss_choice"] == []   # quick runs leave it to the full bench
    assert set(r["quality"]) == set(ALL_MODELS)
    for name, m in r["quality"].items():
        assert set(METRICS) | {"std"} == set(m), name
        assert set(m["std"]) == set(METRICS)
        for key in ("t2v_r1", "t2v_r5", "t2v_r10", "t2v_mdr", "t2v_mnr", "sumr", "v2t_r1"):
            assert isinstance(m[key], float), (name, key)
        has_attention = m["attention_hit"] is not None
        assert has_attention == (name in AFA_MODELS), name   # null for models without AFA
        assert 0.0 <= m["t2v_r1"] <= m["t2v_r5"] <= m["t2v_r10"] <= 100.0
    assert 0.0 < r["attention_hit_uniform"] <= r["attention_hit_any_uniform"] <= 1.0


def test_quick_bench_efficiency_storage_flops(quick_run):
    eff = quick_run["efficiency"]
    assert list(eff) == ["1000", "10000"]
    for n, row in eff.items():
        assert set(row) == {"student_ms_per_query", "student_batched_ms_per_query", "matmul_floor_ms_per_query",
                            "matmul_floor_single_ms", "teacher_ms_per_query", "extrapolated"}
        assert set(row["teacher_ms_per_query"]) == {"xpool", "xclip", "ts2net"}
        assert all(v > 0 for v in row["teacher_ms_per_query"].values())
        assert row["student_ms_per_query"] > 0 and row["matmul_floor_ms_per_query"] > 0
        assert row["matmul_floor_single_ms"] > 0
    assert eff["1000"]["extrapolated"] is False and eff["10000"]["extrapolated"] is True  # quick: teachers at 1k only
    t1, t10 = eff["1000"]["teacher_ms_per_query"], eff["10000"]["teacher_ms_per_query"]
    assert all(t10[k] == pytest.approx(10 * t1[k]) for k in t1)

    storage = quick_run["storage_bytes_per_video"]
    assert storage["student"] == 512 * 4 and storage["student_float16"] == 512 * 2
    assert all(storage[t] >= 12 * 512 * 4 for t in ("xpool", "xclip", "ts2net"))   # teachers keep frames
    flops = quick_run["flops_per_query"]
    assert flops["student"] == 2 * 512                # one dot product per (query, video)
    assert all(flops[t] > 10 * flops["student"] for t in ("xpool", "xclip", "ts2net"))

    paper = quick_run["paper_scale"]
    assert paper["storage_bytes_per_video"]["student"] == 2048
    f = paper["flops_per_query"]
    assert f["student"] == 1024
    assert 1e9 < f["text_encoder"] < 1e10        # ViT-B/32 text tower, 32 tokens: ~2.4 GFLOPs
    assert 12 * 4e9 < f["video_encoder"] < 12 * 2e10   # 12 frames of ViT-B/32 at 224 px: ~8.7 GFLOPs each

    probe = quick_run["index"]["float16_search"]
    assert probe["peak_rss_mib"] >= probe["rss_after_import_mib"] > 0
    assert "T" in quick_run["date"] and "cores" in quick_run["machine"]


def test_encoding_section_compares_bf16_with_fp32(quick_run):
    enc = quick_run["encoding"]
    assert enc["roofline"]["fp32_gflops"] > 0 and enc["roofline"]["bf16_gflops"] > 0
    toy = enc["toy"]
    assert set(toy) == {"fp32", "bf16"} and all(v["frames_per_s"] > 0 and v["share_of_roofline"] > 0 for v in toy.values())
    assert toy["bf16"]["cos_vs_fp32"] >= 0.999   # bf16 embeddings agree with fp32 (the issue's bound)
    assert set(enc["query_ms"]["toy"]) == {"fp32", "bf16"}
    assert enc["query_search_ms"]["toy"]["fp32"] > 0 and enc["query_corpus"] > 0
    assert toy["fp32"]["ms_per_clip"]["encode"] > 0 and toy["fp32"]["ms_per_clip"]["decode"] > 0


def test_end_to_end_section_trains_frozen_and_finetuned(quick_run):
    e2e = quick_run["end_to_end"]
    assert {"backbone", "epochs", "frozen", "finetuned", "ddp", "seconds"} <= set(e2e)
    assert e2e["ddp"] is None   # quick: the equivalence check runs in tests/test_finetune.py instead
    for name in ("frozen", "finetuned"):
        m = e2e[name]
        assert 0.0 <= m["t2v_r1"] <= m["t2v_r5"] <= m["t2v_r10"] <= 100.0 and m["seconds"] > 0
    assert e2e["finetuned"]["precision"] in ("bf16", "fp32") and e2e["frozen"]["precision"] == "fp32"


def test_markdown_reports_every_section(quick_run):
    md = bench.markdown(quick_run)
    for text in ("| teachclip |", "| 10,000 |", "End to end (", "| finetuned |", "matmul floor", "bytes stored (paper scale)", "Cost ratios:", "x its FLOPs per (query, video)", "Encoding (matmul roofline",
                 "GFLOPs per query", "peak RSS"):
        assert text in md, text


def test_teacher_search_ranks_like_the_teachers_own_similarity():
    """The timed path (video side encoded once, pair scores per query) is the teacher's similarity."""
    dim, frames, tokens, n = 32, 4, 5, 60
    g = torch.Generator().manual_seed(0)
    videos = VideoFeatures([f"v{i}" for i in range(n)], torch.randn(n, frames, dim, generator=g),
                           torch.ones(n, frames, dtype=torch.bool), torch.arange(frames).repeat(n, 1),
                           torch.randn(n, frames, tokens, dim, generator=g).half())
    words = torch.randn(2, 6, dim, generator=g)
    texts = TextFeatures(["a", "b"], torch.tensor([0, 1]), ["test", "test"], torch.randn(2, dim, generator=g),
                         words, torch.ones(2, 6, dtype=torch.bool))
    for name in ("xpool", "xclip", "ts2net"):
        teacher = build_teacher(name, dim, frames).eval()
        ref = teacher.similarity(texts, videos)
        with torch.no_grad():
            stored = teacher.encode_videos(videos.frames, videos.mask, videos.patches)
        for i in range(2):
            text = (texts.sentence[i:i + 1], texts.words[i:i + 1], texts.word_mask[i:i + 1])
            scores, rows = teacher_search(teacher, text, stored, k=5, chunk=7)
            assert torch.equal(rows[0], ref[i].topk(5).indices), name
            torch.testing.assert_close(scores[0] * teacher.logit_scale.detach(), ref[i].topk(5).values,
                                       atol=1e-4, rtol=1e-4)


def test_quality_without_experiments_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "teachclip_lite.experiments", None)
    with pytest.raises(RuntimeError, match="--skip-quality"):
        bench.quality(bench.BenchConfig.quick_config(features="synthetic"))


def test_quality_trains_the_loss_choice_rows_lesson_02_loads(quick_run):
    """make bench trains experiments.loss_choice on seed 0, so lesson 02 loads those students after it."""
    from teachclip_lite.experiments import LOSS_CHOICES, ExperimentConfig

    exp = ExperimentConfig.quick(models=("teacher_xclip", "teachclip"), teachers=("xclip",), workers=2)   # forks: a worker must not hang
    summary, _, choice = bench.quality(bench.BenchConfig.quick_config(features="synthetic", experiment=exp,
                                                                      loss_choice=True), log=lambda s: None)
    assert {(r["channel"], r["loss"]) for r in choice} == {(c, x) for c, xs in LOSS_CHOICES.items() for x in xs}
    default = [r for r in choice if (r["channel"], r["loss"]) in (("coarse", "pearson"), ("fine", "ce"))]
    assert [r["t2v_r1"] for r in default] == [summary["teachclip"]["t2v_r1"]] * 2   # the ablation's own model
    assert "Teaching loss" in bench.markdown({**quick_run, "loss_choice": choice})
