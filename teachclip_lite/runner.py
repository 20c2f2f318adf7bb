"""The lessons as a run and as a test: every notebook under papermill, then what their claims measured.

    python -m teachclip_lite.runner --out runs/20250101-120000 [--profile demo|test] [--only 02 03]

executes the notebooks in `notebooks/` in order with the demo parameters (the notebooks' own defaults:
the kit's full budget, models shared with `make bench` through runs/models) or the test parameters
(small and quick; the test suite uses them), and writes into --out each executed notebook, its HTML
export, the metrics JSON it recorded, lessons.json (`[{notebook, seconds, status}]`), claims.json
(`[{lesson, claim, measured, holds, checked}]`: every sentence of a lesson's text that states a number or
a comparison, with what it measured) and results.md. It prints the claims table and exits non-zero when
a lesson fails or a checked claim does not hold. The render check (HTML export, a headless Chromium
screenshot) lives here too: the tests use it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from .paths import PROJECT_ROOT, RUNS_DIR, write_atomic
from .tables import markdown_table

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOKS = ("00_setup_and_toy_world", "01_teacher_scoring", "02_coarse_vs_fine_distillation",
             "03_afa_attention", "04_interactive_retrieval", "05_bring_your_own_videos")

# Test parameters: each notebook in well under 90 s on 2 busy cores. Fewer training videos and two
# epochs: the numbers are not the lesson's (claims that need the full budget are recorded, not checked),
# but every cell runs and every figure is drawn.
_SMALL = {"EPOCHS": 2, "BATCH_SIZE": 64, "MAX_TRAIN_VIDEOS": 200}
TEST_PARAMETERS: dict[str, dict] = {
    "00_setup_and_toy_world": {},
    "01_teacher_scoring": {**_SMALL, "SEEDS": [0], "COST_SIZES": [1000, 4000], "COST_TEACHER_SIZES": [1000], "COST_REPEATS": 2},
    "02_coarse_vs_fine_distillation": {**_SMALL, "SEEDS": [0]},
    "03_afa_attention": {**_SMALL, "SEEDS": [0]},
    "04_interactive_retrieval": dict(_SMALL),
    "05_bring_your_own_videos": {"EXAMPLE_VIDEOS": [24, 6, 10], "EPOCHS": 2},
}
# Demo parameters: the notebooks' own defaults (what a reader gets in JupyterLab).
DEMO_PARAMETERS: dict[str, dict] = {name: {} for name in NOTEBOOKS}
PROFILES = {"test": TEST_PARAMETERS, "demo": DEMO_PARAMETERS}
CELL_TIMEOUT = {"test": 300, "demo": 1200}   # seconds a cell may run: a guard against a hung kernel, not a budget


def kernel_name() -> str:
    """A Jupyter kernel that runs *this* interpreter (the venv's): "python3" when that spec resolves to it,
    else a "teachclip-lite" spec written into this environment. (jupyter_client starts a spec whose argv[0]
    is plain "python" with the interpreter that runs papermill, so the usual venv spec qualifies.)"""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    plain = {"python", f"python{sys.version_info[0]}", "python%d.%d" % sys.version_info[:2]}
    try:
        exe = KernelSpecManager().get_kernel_spec("python3").argv[0]
        if exe in plain or os.path.abspath(exe) == os.path.abspath(sys.executable):
            return "python3"
    except NoSuchKernel:
        pass
    folder = Path(sys.prefix) / "share" / "jupyter" / "kernels" / "teachclip-lite"
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (teachclip-lite)", "language": "python"}
    write_atomic(folder / "kernel.json", json.dumps(spec, indent=1))
    return "teachclip-lite"


def notebook_path(name: str) -> Path:
    return NOTEBOOK_DIR / f"{name}.ipynb"


def run_notebook(name: str, out_dir: str | os.PathLike, profile: str = "demo", parameters: dict | None = None,
                 html: bool = False) -> dict:
    """Execute one notebook with a profile's parameters into out_dir; returns its time and recorded metrics."""
    import papermill as pm

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {**PROFILES[profile][name], "OUT_DIR": str(out_dir), "PROFILE": profile, **(parameters or {})}
    if profile == "test":   # small models stay with the run; the demo shares runs/models with make bench
        params.setdefault("MODELS_DIR", str(out_dir / "models"))
    dst = out_dir / f"{name}.ipynb"
    t0 = time.perf_counter()
    pm.execute_notebook(str(notebook_path(name)), str(dst), parameters=params, kernel_name=kernel_name(),
                        cwd=str(NOTEBOOK_DIR), progress_bar=False, log_output=False,
                        execution_timeout=CELL_TIMEOUT[profile])
    seconds = time.perf_counter() - t0
    metrics_path = out_dir / f"{name}.json"
    if not metrics_path.is_file():
        raise RuntimeError(f"{dst}: ran, but wrote no metrics to {metrics_path}")
    result = {"notebook": name, "profile": profile, "seconds": round(seconds, 1), "path": str(dst),
              "metrics": json.loads(metrics_path.read_text())}
    if html:
        result["html"] = str(export_html(dst))
    return result


def executed(name: str, folder: str | os.PathLike, profile: str = "test") -> dict:
    """`run_notebook` once per folder: a later call reuses the first run's result (or re-raises its error).
    The tests share executed notebooks this way (the notebook tests and the render test)."""
    folder = Path(folder)
    done = folder / f"{name}.run.json"
    if done.exists():
        r = json.loads(done.read_text())
        if "error" in r:
            raise RuntimeError(f"{name} failed earlier in this session: {r['error']}")
        return r
    folder.mkdir(parents=True, exist_ok=True)
    try:
        r = run_notebook(name, folder, profile)
    except Exception as e:
        write_atomic(done, json.dumps({"error": f"{type(e).__name__}: {str(e)[-4000:]}"}))
        raise
    write_atomic(done, json.dumps(r))
    return r


def export_html(ipynb: str | os.PathLike) -> Path:
    """The executed notebook as one HTML page (plotly figures embedded), next to it."""
    import nbformat
    from nbconvert import HTMLExporter

    ipynb = Path(ipynb)
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(ipynb), as_version=4))
    out = ipynb.with_suffix(".html")
    write_atomic(out, body)
    return out


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html_path: str | os.PathLike, png: str | os.PathLike, width: int = 1280, height: int = 6000,
               timeout: float = 180, chromium: str | None = None) -> Path:
    """A headless Chromium screenshot of a page, as a reader would see it (fresh profile, no network)."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install chromium)")
    png = Path(png)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}", "--virtual-time-budget=15000",
               f"--screenshot={png}", Path(html_path).resolve().as_uri()]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {r.returncode}): {r.stderr[-800:]}")
    return png


def figure_check(html_path: str | os.PathLike, out_dir: str | os.PathLike, width: int = 1280,
                 height: int = 16000) -> dict:
    """Does the page show its plotly figures? Screenshots the page and a control copy in which no figure
    is drawn (`Plotly.newPlot` disabled); the pixels that differ are what plotly drew. A page whose
    plotly.js is missing or broken, or that has no figures, draws none. Both copies hide their <img>
    elements (same layout): animated GIF previews would otherwise differ between two screenshots."""
    from PIL import Image

    html_path, out_dir = Path(html_path), Path(out_dir)
    text = html_path.read_text(encoding="utf-8")
    still = text.replace("</head>", "<style>img { visibility: hidden !important; }</style></head>", 1)
    page, control = out_dir / f"{html_path.stem}.page.html", out_dir / f"{html_path.stem}.no-figures.html"
    write_atomic(page, still)
    write_atomic(control, still.replace("Plotly.newPlot(", "void("))
    shots = [screenshot(p, out_dir / f"{p.stem}.png", width, height) for p in (page, control)]
    a, b = (np.asarray(Image.open(s).convert("RGB"), dtype=np.int16) for s in shots)
    drawn = np.abs(a - b).max(-1) > 40
    rows = np.flatnonzero(drawn.any(1))
    return {"figures_in_html": text.count("Plotly.newPlot("), "plotly_js_embedded": "plotly.js v" in text,
            "drawn_pixels": int(drawn.sum()), "first_figure_row": int(rows[0]) if len(rows) else None,
            "screenshot": str(shots[0]), "control": str(shots[1])}


def _fmt(v, digits=1):
    return "–" if v is None else f"{v:.{digits}f}"


def gather_claims(runs: list[dict]) -> list[dict]:
    """Every lesson's claims (Lesson.claim), in lesson order."""
    return [{"lesson": r["notebook"], **c} for r in runs for c in r.get("metrics", {}).get("claims", [])]


def failed_claims(claims: list[dict]) -> list[dict]:
    return [c for c in claims if c["checked"] and not c["holds"]]


def report(runs: list[dict], claims: list[dict], total: float, profile: str) -> str:
    """Markdown: time per notebook, then every claim with what it measured and whether it holds."""
    lines = [f"## teachclip-lite lessons ({profile} parameters), {total:.0f} s in all", "",
             markdown_table(["notebook", "seconds", "status"], [[r["notebook"], _fmt(r.get("seconds"), 0), r["status"]]
                                                                for r in runs])]
    bad = failed_claims(claims)
    rows = []
    for c in claims:
        measured = "; ".join(f"{k} {_value(v)}" for k, v in c["measured"].items())
        mark = ("yes" if c["holds"] else "**NO**") if c["checked"] else ("(yes)" if c["holds"] else "(no)") + " not checked"
        rows.append([c["lesson"][:2], c["claim"], measured, mark])
    lines += ["", f"### Claims: {sum(c['holds'] for c in claims if c['checked'])} of "
                  f"{sum(c['checked'] for c in claims)} checked claims hold"
                  + (f" ({len(bad)} do not)" if bad else ""), "",
              markdown_table(["lesson", "claim", "measured", "holds"], rows)]
    return "\n".join(lines)


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_value(x)}" for k, x in v.items())
    return str(v)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m teachclip_lite.runner",
                                description="Run the teachclip-lite lessons (notebooks) with papermill and check "
                                            "their claims.")
    p.add_argument("--out", default=None, help="output folder (default runs/<timestamp>)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="demo",
                   help="demo: the notebooks' own parameters (the kit's budget); test: small and quick")
    p.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 00 02")
    p.add_argument("--no-html", action="store_true", help="skip the HTML export of each executed notebook")
    a = p.parse_args(argv)
    out = Path(a.out or RUNS_DIR / datetime.now().strftime("%Y%m%d-%H%M%S"))
    names = [n for n in NOTEBOOKS if not a.only or any(n.startswith(o) for o in a.only)]
    print(f"running {len(names)} notebook(s) with the {a.profile} parameters into {out}", flush=True)
    t0, runs = time.perf_counter(), []
    for name in names:
        t1 = time.perf_counter()
        try:
            r = {**run_notebook(name, out, a.profile, html=not a.no_html), "status": "ok"}
            print(f"  {name}: {r['seconds']:.0f} s", flush=True)
        except Exception as e:
            r = {"notebook": name, "seconds": round(time.perf_counter() - t1, 1), "status": "failed",
                 "error": f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"}
            print(f"  {name}: FAILED after {r['seconds']:.0f} s: {r['error']} (see {out / (name + '.ipynb')})",
                  flush=True)
        runs.append(r)
    total = time.perf_counter() - t0
    claims = gather_claims(runs)
    text = report(runs, claims, total, a.profile)
    write_atomic(out / "results.md", text + "\n")
    write_atomic(out / "lessons.json", json.dumps([{k: r.get(k) for k in ("notebook", "seconds", "status", "error")
                                                    if k in r} for r in runs], indent=1))
    write_atomic(out / "claims.json", json.dumps(claims, indent=1))
    print()
    print(text)
    print(f"\nexecuted notebooks, HTML pages, lessons.json and claims.json in {out}")
    bad = failed_claims(claims)
    if bad:
        print(f"{len(bad)} claim(s) do not hold: " + "; ".join(f"{c['lesson'][:2]}: {c['claim']}" for c in bad))
    return 1 if bad or any(r["status"] != "ok" for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
