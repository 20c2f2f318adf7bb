"""The lessons: stored as lessons (outputs stripped, parameters, goals, exercises, no logic of their own),
and executed top to bottom by papermill with the test parameters, each producing what it promises.

Executed notebooks are shared with test_notebook_render.py through one folder per pytest session, so
each notebook runs once. Lessons 01-04 share their checkpoints there too (the test profile keeps them with the run).
"""
import ast
import json
import sys
from pathlib import Path

import nbformat
import pytest

from teachclip_lite import runner
from teachclip_lite.paths import TOY_DIR

PLOTLY = "application/vnd.plotly.v1+json"


def _cells(name):
    return nbformat.read(str(runner.notebook_path(name)), as_version=4).cells


def _parameter_names(cell) -> set[str]:
    return {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


# ---------------------------------------------------------------- the notebooks as stored

@pytest.mark.parametrize("name", runner.NOTEBOOKS)
def test_notebook_is_a_stripped_lesson(name):
    cells = _cells(name)
    code = [c for c in cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "outputs must be stripped in git"
    params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and params[0].cell_type == "code", "exactly one code cell tagged `parameters`"
    first, last = cells[0], cells[-1]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {name[:2]} ")
    assert "What you will learn" in first.source and "## The idea" in first.source
    assert "43.1" in first.source and "46.8" in first.source, "the paper's numbers, for context"
    assert last.cell_type == "markdown" and last.source.startswith("## Try this")
    for c in code:   # thin: narrative, parameters and short calls into teachclip_lite
        tree = ast.parse(c.source)
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) for n in ast.walk(tree)), \
            f"{name}: a function or class in a notebook belongs in teachclip_lite:\n{c.source}"
        assert len(c.source.splitlines()) <= 14, f"{name}: a long cell; move its logic into teachclip_lite:\n{c.source}"


@pytest.mark.parametrize("name", runner.NOTEBOOKS)
def test_profiles_set_only_existing_parameters(name):
    params = next(c for c in _cells(name) if "parameters" in c.metadata.get("tags", []))
    names = _parameter_names(params)
    assert "OUT_DIR" in names
    for profile, table in runner.PROFILES.items():
        unknown = set(table[name]) - names
        assert not unknown, f"{profile} parameters {unknown} are not in {name}'s parameters cell"


# what each lesson shows of the library's own code (issue: lessons show the code they teach)
SHOWN_CODE = {"00_setup_and_toy_world": "toy.plan_world",
              "01_teacher_scoring": "XPoolTeacher.pair_sims",
              "02_coarse_vs_fine_distillation": "losses.coarse_loss, losses.fine_loss",
              "03_afa_attention": "Student.frame_scores, Student.aggregate",
              "04_interactive_retrieval": "Index._scan"}


@pytest.mark.parametrize("name", sorted(SHOWN_CODE))
def test_lesson_shows_the_code_it_teaches(name):
    calls = [c.source for c in _cells(name) if c.cell_type == "code" and "lessons.show_code(" in c.source]
    assert calls and SHOWN_CODE[name] in calls[0], f"{name} should show {SHOWN_CODE[name]}"
    exercises = _cells(name)[-1].source
    assert any(obj.split(".")[-1] in exercises for obj in SHOWN_CODE[name].replace(",", " ").split()), \
        "an exercise should change the code the lesson shows"


def test_claims_are_recorded_checked_and_replaced(tmp_path):
    from teachclip_lite.lessons import Lesson

    test, demo = (Lesson("99_x", tmp_path, tmp_path / "models", profile) for profile in ("test", "demo"))
    assert test.claim("small data cannot show this", False, needs="full", r1=1.0) is False
    assert test.claim("small data shows this", True, needs="any", r1=2.0) is True
    assert [c["checked"] for c in test.values["claims"]] == [False, True]
    demo.claim("a claim", False, r1=1.0)
    demo.claim("a claim", True, r1=3.0)   # a rerun cell replaces its claim
    assert demo.values["claims"] == [{"claim": "a claim", "holds": True, "checked": True, "measured": {"r1": 3.0}}]
    runs = [{"notebook": "99_x", "seconds": 1.0, "status": "ok", "metrics": test.values},
            {"notebook": "98_y", "seconds": 2.0, "status": "ok", "metrics": demo.values}]
    claims = runner.gather_claims(runs)
    assert [c["lesson"] for c in claims] == ["99_x", "99_x", "98_y"] and runner.failed_claims(claims) == []
    claims[2]["holds"] = False
    assert runner.failed_claims(claims) == [claims[2]]
    text = runner.report(runs, claims, 3.0, "demo")
    assert "1 of 2 checked claims hold (1 do not)" in text and "**NO**" in text and "not checked" in text
    with pytest.raises(ValueError):
        test.claim("x", True, needs="sometimes")


def test_kernel_is_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager

    argv0 = KernelSpecManager().get_kernel_spec(runner.kernel_name()).argv[0]
    assert argv0 in ("python", "python3") or Path(argv0) == Path(sys.executable)


# ---------------------------------------------------------------- executed with the test parameters

@pytest.fixture(scope="session")
def lessons(tmp_path_factory):
    """Run a notebook (once per session) and return its recorded metrics and executed notebook."""
    if not (TOY_DIR / ".complete").exists():
        pytest.skip(f"toy world missing in {TOY_DIR}: run `make data` (make test does)")
    from teachclip_lite.features import toy_features

    toy_features(progress=False)   # the feature cache, built once before the lessons (about a minute if cold)
    folder = tmp_path_factory.getbasetemp() / "lessons"

    def run(name):
        r = runner.executed(name, folder, "test")
        return r["metrics"], nbformat.read(r["path"], as_version=4)

    return run


def _claims(m, at_least: int) -> list[dict]:
    """A lesson's claims: each with what it measured; every claim its small data can show holds."""
    claims = m["claims"]
    assert len(claims) >= at_least, [c["claim"] for c in claims]
    assert all(c["measured"] and isinstance(c["holds"], bool) for c in claims)
    assert not [c["claim"] for c in claims if c["checked"] and not c["holds"]]
    return claims


def _figures(nb) -> int:
    return sum(PLOTLY in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.notebook
@pytest.mark.slow
def test_00_setup_and_toy_world(lessons):
    m, nb = lessons("00_setup_and_toy_world")
    assert m["python"] == sys.executable, "the notebook ran in another interpreter than the venv's"
    meta = json.loads((TOY_DIR / "meta.json").read_text())
    assert m["videos"] == meta["videos"] and [s["split"] for s in m["splits"]] == ["train", "val", "test"]
    assert len(m["shown"]) == 2 and all((TOY_DIR / v).is_file() for v in m["shown"])
    assert m["toy_clip"]["frame_to_caption_r1"] > 10 * m["toy_clip"]["chance_r1"]
    assert 0 < m["phrase_frame_similarity_max"] <= 1
    real = m["real_weights"]
    assert real["ok"] or ("checkpoint" in real["message"] and "toy" in real["message"])
    assert _figures(nb) >= 3   # two clip strips and the phrase x frame heatmap
    assert all(c["checked"] for c in _claims(m, 2))


@pytest.mark.notebook
@pytest.mark.slow
def test_01_teacher_scoring(lessons):
    m, nb = lessons("01_teacher_scoring")
    r1 = m["r1"]
    assert set(r1) == {"meanP", "teacher_xpool", "teacher_xclip", "teacher_ts2net", "teacher_ensemble"}
    assert all(0 <= v <= 100 for v in r1.values())
    assert r1["teacher_ensemble"] > r1["meanP"], "the teachers should beat mean pooling on the toy world"
    hit = m["relevance_hit"]
    assert all(hit[t] > hit["uniform"] for t in ("teacher_xpool", "teacher_xclip", "teacher_ts2net"))
    for row in m["pair_confusion"]:
        assert 0 <= row["p_sibling"] <= 1 and 0 <= row["p_correct"] <= 1
    flops, storage = m["flops"], m["storage"]
    assert all(flops[t] > 10 * flops["student"] and storage[t] > storage["student"] for t in ("xpool", "xclip", "ts2net"))
    for n, row in m["ms_per_query"].items():
        assert row["student"] > 0 and set(row) >= {"student", "xpool", "xclip", "ts2net"}
    assert _figures(nb) >= 5
    _claims(m, 6)


@pytest.mark.notebook
@pytest.mark.slow
def test_02_coarse_vs_fine_distillation(lessons):
    m, nb = lessons("02_coarse_vs_fine_distillation")
    students = ("meanP", "seqTransf", "afa", "afa_nce02", "seqTransf_afa", "teachclip_coarse", "teachclip_fine",
                "teachclip")
    assert all(f"| {s} |" in m["table"] for s in students)
    assert set(m["r1"]) >= set(students) and all(0 <= m["r1"][s] <= 100 for s in students)
    assert {"nce", "coarse", "fine", "loss", "val_r1"} <= set(m["history_components"])
    choice = {(r["channel"], r["loss"]): r for r in m["loss_choice"]}
    assert set(choice) == {("coarse", "pearson"), ("coarse", "ce"), ("coarse", "l1"),
                           ("fine", "ce"), ("fine", "pearson"), ("fine", "l1")}
    # the default pair is the ablation's teachclip, not trained again
    assert choice[("coarse", "pearson")]["t2v_r1"] == pytest.approx(m["r1"]["teachclip"])
    assert _figures(nb) >= 5
    _claims(m, 6)


@pytest.mark.notebook
@pytest.mark.slow
def test_03_afa_attention(lessons):
    m, nb = lessons("03_afa_attention")
    hit, hit_any, uniform = m["attention_hit"], m["attention_hit_any"], m["uniform"]
    for s in ("afa", "seqTransf_afa", "teachclip_fine", "teachclip"):
        assert 0 <= hit[s] <= hit_any[s] <= 1
    assert hit["teachclip_fine"] > uniform["attention_hit_uniform"], "taught AFA should look at described frames"
    g = m["gallery"]
    assert g["successes"] and all(s["rank"] == 1 for s in g["successes"])
    assert g["failures"] and all(f["rank"] > 1 and f["retrieved"] != f["video"] for f in g["failures"])
    assert _figures(nb) >= 6
    _claims(m, 3)


@pytest.mark.notebook
@pytest.mark.slow
def test_04_interactive_retrieval(lessons):
    m, nb = lessons("04_interactive_retrieval")
    checks = m["checks"]
    assert checks["all_returned_k"] and checks["queries"] == len(m["queries"]) == 6
    assert all(len(r["student"]) == len(r["teacher"]) == m["k"] for r in m["results"].values())
    assert checks["with_expected_video"] == 4 and checks["student_found"] + checks["teacher_found"] >= 1
    assert 0 < m["latency_ms"]["student"] < m["latency_ms"]["teacher"]
    views = [o for c in nb.cells for o in c.get("outputs", []) if "application/vnd.jupyter.widget-view+json"
             in o.get("data", {})]
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    models = {v["model_name"] for v in state.values()}
    assert views and {"ComboboxModel", "IntSliderModel", "OutputModel"} <= models, "the search box was not built"
    claims = _claims(m, 2)
    assert all(c["checked"] for c in claims)   # both hold on any data: the index agrees, the student is faster


@pytest.mark.notebook
@pytest.mark.slow
def test_05_bring_your_own_videos(lessons, monkeypatch, tmp_path):
    monkeypatch.setenv("TEACHCLIP_CACHE", str(tmp_path / "cache"))   # the kernel's feature cache: not data/cache
    m, nb = lessons("05_bring_your_own_videos")
    n_train, n_val, n_test = runner.TEST_PARAMETERS["05_bring_your_own_videos"]["EXAMPLE_VIDEOS"]
    assert m["videos"] == m["indexed"] == n_train + n_val + n_test and m["problems"] == 0
    assert m["trained"] and Path(m["model"]).is_file() and (Path(m["index"]) / "CURRENT").is_file()
    assert any((tmp_path / "cache").iterdir()), "the example folder's features were not cached where asked"
    for key in ("student", "zero_shot_meanP"):
        assert 0 <= m[key]["t2v_r1"] <= m[key]["t2v_r5"] <= m[key]["t2v_r10"] <= 100
    assert len(m["searches"]) == 3 and all(len(v) == m["k"] for v in m["searches"].values())
    assert set(m["searches"]) == set(m["expected"])
    assert _figures(nb) >= 1
    _claims(m, 2)
