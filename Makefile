# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv on first use;
# `make test-fast` leaves out the tests marked slow (training runs, subprocesses) for the edit-test loop.
# `make wheelhouse` packs what a GPU machine lacks for scripts/gpu_benchmark.sh (docs/benchmarks.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DETECTRON2_DATASETS ?= $(CURDIR)/datasets

DEMO_CONFIG ?= configs/phantom/cxr_codet_lite0_FPN_phantom.yaml
DEMO_OUTPUT ?= output/demo/cxr_codet_lite0_FPN_phantom
WHEELHOUSE ?= .whl
WHEEL_PYTHON_VERSION ?= 3.12

.PHONY: install demo test test-fast wheelhouse gpu-benchmark-cpu clean-venv

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

# Wheels for CPython $(WHEEL_PYTHON_VERSION) (the GPU machine's) of everything it lacks, under 60 MiB.
wheelhouse: install
	bash scripts/build_wheelhouse.sh $(PY) $(WHEELHOUSE) $(WHEEL_PYTHON_VERSION)

# scripts/gpu_benchmark.sh --cpu from a wheelhouse for this Python, in an interpreter that sees only the
# GPU image's packages: shows here that the wheelhouse and every step of the GPU run work.
gpu-benchmark-cpu: install
	bash scripts/build_wheelhouse.sh $(PY) output/wheelhouse-local $$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
	bash scripts/gpu_image_python.sh $(PY) output/gpu-image-python
	OUT=output/gpu_benchmark_cpu bash scripts/gpu_benchmark.sh --cpu --wheelhouse output/wheelhouse-local \
		--python output/gpu-image-python/python

clean-venv:
	rm -rf $(VENV)
