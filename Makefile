# The two commands the README shows: `make lab` and `make test`. Both build .venv from the
# lock on first use, so a fresh machine needs only python3, make and the package registries.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-from-lock
# JupyterLab refuses to start as root (CI machines, containers) unless told it may.
ALLOW_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: lab test test-fast lint bench clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(ALLOW_ROOT)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# Two pytest-xdist workers, one per core of the 2-core machines CI and Binder have; each test
# module (and each lesson's cells) stays in one worker, in order (conftest.py: one thread each).
# A plain `pytest ...` runs in one process, for a single test or a debugger.
PYTEST := $(PY) -m pytest -n 2 --dist loadscope

# The full suite CI runs: lint, unit tests, doctests, the lessons (nbval, each within its time
# and memory budget) and the browser check.
test: lint
	$(PYTEST)

# The inner loop: lint, unit tests and doctests; nothing marked slow (no lesson is executed,
# no browser, wheel or site build).
test-fast: lint
	$(PYTEST) tests sparsegrad_lab -m "not slow"

bench: $(STAMP)
	$(PY) -m sparsegrad_lab bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis artifacts _build node_modules

# ---- The course kit (README "For tutors"): the lessons' website and the student edition.
.PHONY: site student

# The site's browser assets (MathJax, RequireJS, the widgets' HTML manager), exactly as
# package-lock.json has them; `npm ci` rewrites node_modules/.package-lock.json each time.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts

# A static website of every lesson in _build/site/ (open _build/site/index.html), rendered
# from the committed outputs without executing them and without the network.
site: $(STAMP) node_modules/.package-lock.json
	$(PY) docs/build_site.py --out _build/site

# The lessons without their solutions, to hand out, in _build/student/.
student: $(STAMP)
	rm -rf _build/student
	$(PY) -m sparsegrad_lab lessons _build/student --student
