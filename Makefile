# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: demo test test-fast install clean

install: $(STAMP)

# Re-installs only when the dependency list or the pins change. pip installs the pinned uv,
# uv installs the rest (same pins; it unpacks and byte-compiles in parallel: 25 s here
# against pip's 105 s, benchmarks/install_time.py). The venv keeps pip for the user.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt pip setuptools wheel uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode --no-build-isolation \
		-c constraints.txt -e ".[dev,weights]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/detseg demo --out $(DEMO_OUT)

# One pytest worker per core (pytest-xdist); a test file stays on one worker, so its module
# fixtures are built once. Files go out in collection order, heavy (slow-marked) files first
# (tests/conftest.py), not xdist's default of most tests first, which left the heaviest files
# for last, run by one worker while the other idled. TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= auto

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
