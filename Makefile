# The two commands the README shows: `make lab` and `make test`. Both build .venv from the
# lock on first use, so a fresh machine needs only python3, make and the package registries.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-from-lock
# JupyterLab refuses to start as root (CI machines, containers) unless told it may.
ALLOW_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: lab test test-fast test-one lint bench widget-times lesson-times clean

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
	$(VENV)/bin/lint-imports

# Two pytest-xdist workers, one per core of the 2-core machines CI and Binder have; each test
# module (and each lesson's cells) stays in one worker, in order (conftest.py: one thread each).
# A plain `pytest ...` runs in one process, for a single test or a debugger.
PYTEST := $(PY) -m pytest -n 2 --dist loadscope

# The full suite CI runs: lint, unit tests, doctests, the lessons (nbval, each within its
# memory budget) and the browser check.
test: lint
	$(PYTEST)

# The inner loop: lint, unit tests and doctests; nothing marked slow (no lesson is executed,
# no browser, wheel or site build).
test-fast: lint
	$(PYTEST) tests sparsegrad_lab -m "not slow"

bench: $(STAMP)
	$(PY) -m sparsegrad_lab bench

# One test, file or -k selection, in one process and without lint (a debugger works):
# make test-one T=tests/test_ops.py::test_name
test-one: $(STAMP)
	$(if $(T),,$(error usage: make test-one T=tests/test_ops.py::test_name))
	$(PY) -m pytest $(T)

# Speed is a benchmark, not a test (CI machines are shared); run these on a quiet machine.
# Each callback that runs while a slider is dragged, at the slider's ends, against 0.2 s.
widget-times: $(STAMP)
	$(PY) benchmarks/widget_callbacks.py

# Each lesson run from the top in a fresh kernel, against its time budget.
lesson-times: $(STAMP)
	$(PY) benchmarks/lesson_times.py

clean:
	rm -rf $(VENV) .venv-torch-* .pytest_cache .ruff_cache .mypy_cache .hypothesis artifacts _build node_modules

# ---- The course kit (README "For tutors"): the lessons' website and the student edition.
.PHONY: site site-student student course

# The site's browser assets (MathJax, RequireJS, the widgets' HTML manager), exactly as
# package-lock.json has them; `npm ci` rewrites node_modules/.package-lock.json each time.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts

# A static website of every lesson in _build/site/ (open _build/site/index.html), rendered
# from the committed outputs without executing them and without the network.
site: $(STAMP) node_modules/.package-lock.json
	$(PY) docs/build_site.py --out _build/site

# The same site built from the student edition (no solutions, hidden tests or model answers),
# in _build/site-student/: what students may be shown.
site-student: $(STAMP) node_modules/.package-lock.json
	$(PY) docs/build_site.py --out _build/site-student --student

# A ready nbgrader course directory in _build/course/ (docs/tutors.md: from there to grades).
course: $(STAMP)
	rm -rf _build/course
	$(PY) -m sparsegrad_lab course _build/course

# The lessons without their solutions, to hand out, in _build/student/.
student: $(STAMP)
	rm -rf _build/student
	$(PY) -m sparsegrad_lab lessons _build/student --student

# ---- The supported torch range, as a tested fact (README "Supported torch versions").
.PHONY: torch-check torch-venv

# `make torch-check TORCH=2.11.0`: a venv of its own, .venv-torch-2.11.0, holding the lock with
# torch replaced by that release (tools/lock_for_torch.py prints which pins had to yield to
# it), then the unit tests and doctests (test-fast's selection: no browser, site, wheel or
# student-edition run, none of which tests torch) and the lessons. Both steps run even if the
# first fails; the target fails if either did.
# The lessons run with --nbval-lax: each cell must execute without an error, but the saved
# outputs are torch 2.13.0's, and the version line, timings and measured bytes differ by
# release. Their memory budget (tests/support/notebook_budget.py) is left to `make test`: it
# is Binder's, which runs the CPU build, while any torch but 2.13.0 comes from PyPI as the
# CUDA build (about 3 GB with its nvidia-* wheels), whose every process holds some 170 MiB
# more -- lesson 05's kernel and its two DistributedDataParallel workers went over 1.5 GiB.
# PIP_CONSTRAINT=/dev/null replaces a machine-wide pip constraints file that may cap torch
# below the release asked for (pip ignores an empty PIP_CONSTRAINT).
TORCH ?=
ifneq ($(filter torch-check torch-venv,$(MAKECMDGOALS)),)
ifeq ($(TORCH),)
$(error usage: make torch-check TORCH=2.11.0 (or torch-venv))
endif
endif
TORCH_VENV = .venv-torch-$(TORCH)
# $(@D): the venv of the pattern rule below.
TORCH_PIP = PIP_CONSTRAINT=/dev/null $(@D)/bin/python -m pip install --quiet \
	--disable-pip-version-check
TORCH_PYTEST = $(TORCH_VENV)/bin/python -m pytest -p no:cacheprovider -n 2 --dist loadscope

.venv-torch-%/.installed: requirements.lock pyproject.toml tools/lock_for_torch.py
	rm -rf $(@D)
	$(PYTHON) -m venv $(@D)
	echo '*' > $(@D)/.gitignore  # git ignores the venv (Python 3.13's venv writes this itself)
	$(TORCH_PIP) --no-deps torch==$* "$$(grep '^packaging==' requirements.lock)"
	$(@D)/bin/python tools/lock_for_torch.py requirements.lock $* > $(@D)/requirements.txt
	$(TORCH_PIP) -r $(@D)/requirements.txt
	$(TORCH_PIP) --no-deps -e .
	touch $@

# Only the venv (CI builds it apart, so that a download failure is told from a test failure).
torch-venv: $(TORCH_VENV)/.installed

# The first line checks that `import sparsegrad_lab` is silent and leaves torch's sparse
# invariant-check setting as it found it (_torch_util.py), in a fresh process.
torch-check: $(TORCH_VENV)/.installed
	$(TORCH_VENV)/bin/python -W error::UserWarning -c "import sys, torch; \
		checks = torch.sparse.check_sparse_tensor_invariants.is_enabled; before = checks(); \
		import sparsegrad_lab; assert checks() == before, 'import switched the checks'; \
		print('torch', torch.__version__, 'python', sys.version.split()[0])"
	status=0; \
	$(TORCH_PYTEST) tests sparsegrad_lab -m "not slow" || status=1; \
	$(TORCH_PYTEST) notebooks --nbval-lax -p no:tests.support.notebook_budget || status=1; \
	exit $$status
