.PHONY: demo check test lint
PY := .venv/bin/python
UNIT_TESTS := tests/core tests/vitals

demo:
	bash scripts/setup.sh runtime
	$(PY) -m p2pmed demo

# The inner loop, under a minute: lint, types, import contracts and the unit tests (core,
# vitals, codecs, wire vectors). No root, no browser, no network namespaces. Needs the test venv
# (`bash scripts/setup.sh test`, or `.venv/bin/pip install -e '.[test]'` without root).
check:
	@test -x .venv/bin/lint-imports || { echo "make check: no test venv; run: bash scripts/setup.sh test" >&2; exit 1; }
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports --no-cache
	.venv/bin/pytest -q $(UNIT_TESTS)

# The full suite, as CI runs it.
test:
	bash scripts/setup.sh test
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports --no-cache
	.venv/bin/pytest -q

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy && .venv/bin/lint-imports --no-cache
