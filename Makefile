# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv on first use;
# `make test-fast` leaves out the tests marked slow (training runs, subprocesses) for the edit-test loop.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DETECTRON2_DATASETS ?= $(CURDIR)/datasets

DEMO_CONFIG ?= configs/phantom/cxr_codet_R18_FPN_phantom.yaml
DEMO_OUTPUT ?= output/demo/cxr_codet_R18_FPN_phantom

.PHONY: install demo test test-fast clean-venv

install: $(STAMP)

# Order matters: torch first (detectron2's setup.py imports it), then our package and its pinned
# dependencies, then detectron2's Python sources (scripts/install_detectron2.sh explains why).
$(STAMP): setup.py constraints.txt scripts/install_detectron2.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt torch torchvision
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	bash scripts/install_detectron2.sh $(PY)
	$(PY) -c "import cxr_codet; print('cxr_codet import OK')"
	touch $(STAMP)

demo: install
	$(PY) tools/train_net.py --config-file $(DEMO_CONFIG) OUTPUT_DIR $(DEMO_OUTPUT)

test: install
	$(PY) -m pytest -q tests

test-fast: install
	$(PY) -m pytest -q tests -m "not slow"

clean-venv:
	rm -rf $(VENV)
