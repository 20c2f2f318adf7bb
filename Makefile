# Two commands do everything: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TOY    := data/toy/.complete
RUN    ?= runs/$(shell date +%Y%m%d-%H%M%S)

.PHONY: venv data toy-clip demo test lab bench gpu-check clean chromium

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# order-only: reinstalling the venv does not make the (deterministic) toy world stale
data: $(TOY)
$(TOY): | $(STAMP)
	$(PY) -m teachclip_lite.toy --out data/toy

toy-clip: $(TOY)
	$(PY) -m teachclip_lite.backbone pretrain-toy --data data/toy --out teachclip_lite/assets/toy_clip.pt

# PROFILE=test runs the lessons with the small test parameters (a few minutes) instead of the demo ones.
PROFILE ?= demo
demo: $(TOY)
	$(PY) -m teachclip_lite.runner --out $(RUN) --profile $(PROFILE)

test: $(TOY) chromium
	$(PY) -m pytest -q

# Headless Chromium for the notebook render test; installed when missing and apt-get can
# (as root), otherwise that one test skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	 { if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	     echo "installing Chromium with apt-get for the notebook render test (once; about 100 Debian packages)"; \
	     apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null) \
	     || echo "chromium not installed: the render test will skip"; \
	   else echo "chromium missing (no apt-get or not root): the render test will skip"; fi; }

# as root (containers), Jupyter refuses to start without --allow-root
lab: $(TOY)
	$(VENV)/bin/jupyter lab notebooks/ $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

bench: $(TOY)
	$(PY) -m teachclip_lite.bench --out runs/bench.json

# On a CUDA machine: the paper-shaped student (ViT-B-32, 12 frames, bf16) end to end, one GPU and torchrun on
# all of them; writes runs/gpu_check.json. Without CUDA it says so and measures nothing.
gpu-check: $(TOY)
	$(PY) -m teachclip_lite.gpu_check --out runs/gpu_check.json

clean:
	rm -rf data/toy data/cache runs
