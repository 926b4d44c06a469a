.PHONY: demo test lint bench
PY := .venv/bin/python

demo:
	bash scripts/setup.sh runtime
	$(PY) -m p2pmed demo

test:
	bash scripts/setup.sh test
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports --no-cache
	.venv/bin/pytest -q

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
