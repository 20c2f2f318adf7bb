"""environment.yml and pyproject.toml must name the same dependencies."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_matches_pyproject():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in proj["dependencies"] + proj["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"] if isinstance(d, str))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {_name(r) for r in pip} == wanted


def test_design_card_packages_are_dependencies():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in proj["dependencies"]}
    for pkg in ("torch", "open-clip-torch", "jupyterlab", "ipywidgets", "decord", "plotly", "papermill", "tqdm",
                "numpy", "av"):
        assert pkg in names
