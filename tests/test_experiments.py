"""The ablation runner on a small feature-space world: every model, the table, the ground truth."""
import pytest
import torch

from teachclip_lite.experiments import ALL_MODELS, STUDENTS, ExperimentConfig, run_experiments, synthetic_features
from teachclip_lite.train import TrainConfig


@pytest.fixture(scope="module")
def results():
    fs, truth = synthetic_features(n_train=48, n_val=16, n_test=16, dim=16, seed=2)
    cfg = ExperimentConfig.quick(seeds=(0, 1), train=TrainConfig(epochs=1, batch_size=32))
    return run_experiments(cfg, fs, progress=False, truth=truth)


def test_every_model_and_seed_has_a_row(results):
    assert {(r["model"], r["seed"]) for r in results.rows} == {(m, s) for m in ALL_MODELS for s in (0, 1)}
    assert set(results.models) >= {(m, s) for m in ALL_MODELS for s in (0, 1)}
    assert ("teachclip", 1) in results.histories and ("teacher_xclip", 0) in results.histories


def test_summary_means_stds_and_attention(results):
    s = results.summary()
    assert list(s) == list(ALL_MODELS)
    for name, m in s.items():
        assert 0 <= m["t2v_r1"] <= 100 and m["std"]["t2v_r1"] >= 0 and m["seeds"] == 2
        assert m["sumr"] == pytest.approx(m["t2v_r1"] + m["t2v_r5"] + m["t2v_r10"])
        has_afa = name in ("afa", "afa_nce02", "seqTransf_afa", "teachclip_coarse", "teachclip_fine", "teachclip")
        assert (m["attention_hit"] is not None) == has_afa
        if has_afa:
            assert 0 <= m["attention_hit"] <= m["attention_hit_any"] <= 1
    u = results.uniform
    assert 0 < u["attention_hit_uniform"] < u["attention_hit_any_uniform"] < 1
    table = results.markdown()
    assert all(f"| {m} |" in table for m in ALL_MODELS) and "uniform weights" in table


def test_unknown_model_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown models"):
        ExperimentConfig(models=("meanP", "clip4clip"))


def test_seeds_in_worker_processes_give_the_same_table():
    fs, truth = synthetic_features(n_train=32, n_val=12, n_test=12, dim=8, seed=3)
    models = ("afa", "teacher_xpool", "teachclip")
    kw = dict(seeds=(0, 1), models=models, teachers=("xpool",), train=TrainConfig(epochs=1, batch_size=16))
    one = run_experiments(ExperimentConfig.quick(workers=1, **kw), fs, progress=False, truth=truth)
    two = run_experiments(ExperimentConfig.quick(workers=2, **kw), fs, progress=False, truth=truth)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]  # noqa: E731
    assert strip(one.rows) == strip(two.rows) and set(two.models) == set(one.models)


def test_the_registry_names_every_model_once():
    from teachclip_lite.models import REGISTRY, get_model, list_models

    assert list_models() == ALL_MODELS and set(list_models("baseline", "student")) == set(STUDENTS)
    assert get_model("teachclip").coarse and get_model("teachclip").fine and get_model("teachclip").nce is None
    assert not get_model("afa_nce02").taught and get_model("afa_nce02").nce is None   # the recipe's weight, no teacher
    assert all(get_model(m).is_student != (m.startswith("teacher_")) for m in REGISTRY)
    with pytest.raises(ValueError, match="unknown model"):
        get_model("teachclip_xl")


def _index_after_fork(x):
    from teachclip_lite import experiments

    experiments._one_thread()
    return float(x[torch.arange(0, len(x), 2)].sum())


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="no fork here")
def test_a_forked_worker_does_not_hang_on_the_parents_thread_pool():
    """What experiments' workers do first: without it a child's first parallel op waited forever on the OpenMP
    pool the parent had started (seen in make bench; 10 lines reproduce it)."""
    from multiprocessing import get_context

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(4000, 12, 64)
        (x @ x.transpose(1, 2)).sum()       # the parent's pool is up
        x[torch.arange(0, len(x), 2)].sum()
        with get_context("fork").Pool(1) as pool:
            assert pool.apply_async(_index_after_fork, (x,)).get(timeout=120) == pytest.approx(
                float(x[torch.arange(0, len(x), 2)].sum()), rel=1e-4)
    finally:
        torch.set_num_threads(threads)
