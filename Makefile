# Two commands for a fresh Linux machine with Python 3.11:
#   make demo   run the main job (notebook 01, smoke parameters: tiny model, synthetic corpus, CPU)
#   make test   run the whole test suite (unit, build, papermill smoke of every notebook)
# (make test-fast: the edit-test loop, without the notebook smoke runs and the slow tests.)
# All create or reuse .venv by themselves. CPU torch 2.13.0 is installed only where the venv
# cannot already import torch, so an existing CUDA build is never replaced.

PYTHON ?= python3
VENV   ?= .venv
VPY    := $(VENV)/bin/python
DEMO_DIR ?= demo

.PHONY: demo test test-fast venv notebooks check clean

$(VENV)/.installed: pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	@$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install --quiet "torch==2.13.0"
	$(VPY) -m pip install --quiet -e ".[dev]"
	@touch $@

venv: $(VENV)/.installed

notebooks: venv
	$(VPY) build_notebooks.py

check: venv
	$(VPY) build_notebooks.py --check

demo: venv
	$(VPY) build_notebooks.py --check
	$(VPY) build_notebooks.py --smoke-run 01_hobbyist_gemma2_2b_colab --out $(DEMO_DIR)

test: venv
	$(VPY) build_notebooks.py --check
	$(VPY) -m pytest -n auto -q

test-fast: venv
	$(VPY) -m pytest -n auto -q -m "not notebook and not slow"

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
