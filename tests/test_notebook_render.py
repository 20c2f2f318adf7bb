"""An executed lesson, read as a reader reads it: exported to HTML and drawn by headless Chromium.

The check fails when the page shows no figure: `runner.figure_check` screenshots the page and a copy in
which no plotly figure is drawn, and counts the pixels plotly drew. A page without plotly.js must fail it.
Needs Chromium (Debian: `apt-get install chromium`; `make test` installs it where apt-get works);
without it these tests are skipped. Set TEACHCLIP_RENDER_DIR to keep the screenshots.
"""
import os
import shutil
from pathlib import Path

import pytest

from teachclip_lite import runner
from teachclip_lite.paths import TOY_DIR

pytestmark = [pytest.mark.notebook, pytest.mark.slow]
RENDERED = ("00_setup_and_toy_world", "02_coarse_vs_fine_distillation")
MIN_DRAWN = 20_000   # pixels; one small chart draws well over 100 000


@pytest.fixture(scope="module")
def browser():
    path = runner.find_chromium()
    if path is None:
        pytest.skip("chromium not installed: `apt-get install chromium` (Debian) to run the render check")
    if not (TOY_DIR / ".complete").exists():
        pytest.skip(f"toy world missing in {TOY_DIR}: run `make data`")
    return path


def _keep(paths, name):
    keep = os.environ.get("TEACHCLIP_RENDER_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for p in paths:
            shutil.copy(p, Path(keep) / f"{name}-{Path(p).name}")


def _executed_html(name, tmp_path_factory):
    from teachclip_lite.features import toy_features

    toy_features(progress=False)
    r = runner.executed(name, tmp_path_factory.getbasetemp() / "lessons", "test")
    return runner.export_html(r["path"])


@pytest.mark.parametrize("name", RENDERED)
def test_executed_lesson_shows_its_figures(name, browser, tmp_path_factory, tmp_path):
    html = _executed_html(name, tmp_path_factory)
    check = runner.figure_check(html, tmp_path, height=12_000)
    _keep([check["screenshot"]], name)
    assert check["plotly_js_embedded"], "plotly.js is not in the page: figures cannot draw offline"
    assert check["figures_in_html"] >= 3
    assert check["drawn_pixels"] > MIN_DRAWN, f"the page shows no figure ({check['drawn_pixels']} pixels drawn)"


def test_check_fails_without_plotly_js(browser, tmp_path_factory, tmp_path):
    """The same page with the embedded plotly.js removed: its figures stay empty, and the check sees it."""
    html = _executed_html(RENDERED[0], tmp_path_factory)
    text = html.read_text(encoding="utf-8")
    at = text.index("plotly.js v")
    start, end = text.rindex("<script", 0, at), text.index("</script>", at) + len("</script>")
    broken = tmp_path / "no-plotly.html"
    broken.write_text(text[:start] + text[end:], encoding="utf-8")
    check = runner.figure_check(broken, tmp_path, height=6_000)
    _keep([check["screenshot"]], "no-plotly")
    assert check["figures_in_html"] >= 3 and not check["plotly_js_embedded"]
    assert check["drawn_pixels"] < MIN_DRAWN
