"""Where things live: the toy world, the feature cache, runs. One place, so notebooks,
CLI and tests agree whatever their working directory."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
TOY_DIR = Path(os.environ.get("TEACHCLIP_TOY", DATA_DIR / "toy"))
CACHE_DIR = Path(os.environ.get("TEACHCLIP_CACHE") or
                 (DATA_DIR / "cache" if DATA_DIR.is_dir() else Path.home() / ".cache" / "teachclip-lite"))
RUNS_DIR = PROJECT_ROOT / "runs"
