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

.PHONY: demo test test-fast venv notebooks check clean tuned-lens-venv sae-bench-venv autocircuit-venv

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
	@$(MAKE) --no-print-directory tuned-lens-venv || echo "tuned-lens venv not built: tests/test_lens.py's package cross-check will skip"
	@$(MAKE) --no-print-directory sae-bench-venv || echo "sae-bench venv not built: tests/test_scores.py's SAEBench cross-check will skip"
	@$(MAKE) --no-print-directory autocircuit-venv || echo "AutoCircuit venv not built: tests/test_circuits_acdc.py's AutoCircuit cross-check will skip"
	$(VPY) build_notebooks.py --check
	$(VPY) -m pytest -n auto -q

test-fast: venv
	$(VPY) -m pytest -n auto -q -m "not notebook and not slow"

clean:
	rm -rf $(DEMO_DIR) .pytest_cache

# The tuned-lens package (for tests/test_lens.py's format check) in its own venv: its pins clash with
# ours, so it is installed without dependencies and reuses this venv's packages through a .pth file.
tuned-lens-venv: venv
	@test -x .venv-tunedlens/bin/python || $(PYTHON) -m venv .venv-tunedlens
	$(VPY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > "$$(.venv-tunedlens/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/project.pth"
	.venv-tunedlens/bin/pip install --quiet --no-deps "tuned-lens==0.2.0"

# SAEBench (for tests/test_scores.py's cross-check of sparse probing and TPP) in its own venv the same way:
# it pins numpy<2 and datasets<4, so it goes in without dependencies over this venv's packages, plus
# tabulate, the one module its TPP code imports that we do not have.
sae-bench-venv: venv
	@test -x .venv-saebench/bin/python || $(PYTHON) -m venv .venv-saebench
	$(VPY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > "$$(.venv-saebench/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/project.pth"
	.venv-saebench/bin/pip install --quiet --no-deps "sae-bench==0.6.0" "tabulate==0.10.0"

# AutoCircuit (tests/test_circuits_acdc.py's cross-check of EAP and ACDC) needs TransformerLens < 3, which
# clashes with our pins: its own venv, CPU torch 2.13.0 first and held by a constraint (scripts/autocircuit_venv.sh).
autocircuit-venv: .venv-autocircuit/.installed

.venv-autocircuit/.installed: scripts/autocircuit_venv.sh
	PYTHON=$(PYTHON) scripts/autocircuit_venv.sh .venv-autocircuit
	@touch $@
