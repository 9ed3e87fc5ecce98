# Two commands do everything on a fresh machine (see README.md):
#   make book   builds the Jupyter Book (PROFILE=quick by default; smoke, paper)
#   make test   runs the tests, including a smoke build of the book
PROFILE ?= quick
PYTHON ?= python3
# The data: $LADNN_DATA_DIR when set, else ./data, else a copy beside the repository (DATA_BESIDE); when none is
# found, `python -m ladnn.fetch` fetches it into ./data (ignored by git), or stops at once with one line when offline.
DATA_BESIDE ?= ../shared/data
DATA = d=$$($(PYTHON) -m ladnn.fetch data $(DATA_BESIDE)) && export LADNN_DATA_DIR="$$d" &&
# Real CT for evaluation only (never trained or chosen on): the chapter "New sources" and benchmarks/transfer.py
export LADNN_EXTERNAL_DIR ?= $(abspath ../shared/external/covid-ct-md-sample)

.PHONY: data install browser book test lint clean gpu-check plan

# First, before the install: a machine without data and without internet stops here at once, with one line.
data:
	@$(PYTHON) -m ladnn.fetch data $(DATA_BESIDE) >/dev/null

# constraints.txt: the exact versions of the book (pyproject.toml gives the library ranges)
install:
	$(PYTHON) -m pip install -q -c constraints.txt -e ".[book,test]"

# OPTIONAL=1: a profile's optional backbones join where their weights resolve (the model hub, $LADNN_WEIGHTS_DIR)
OPTIONAL ?=
BOOK_FLAGS = --profile $(PROFILE) $(if $(OPTIONAL),--with-optional-backbones)

book: data install
	@$(DATA) $(PYTHON) -m ladnn.book $(BOOK_FLAGS)

# The browser tests need Debian's chromium, chromium-driver and nodejs (the page's script run by node, tests/test_serve_page.py):
# installed here when missing and we may (root, apt),
# else one line says what to install.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v node >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium, chromium-driver and nodejs for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver nodejs >/dev/null; \
	  else \
	    echo "make test needs Chromium and Node.js for its browser tests: run 'sudo apt-get install chromium chromium-driver nodejs' (Debian)" >&2; \
	    exit 1; \
	  fi; }

test: data install browser lint
	@$(DATA) $(PYTHON) -m pytest -q tests

lint:
	$(PYTHON) -m ruff check ladnn tests benchmarks notebooks

plan:
	@$(DATA) $(PYTHON) -m ladnn.book $(BOOK_FLAGS) --plan

# On a GPU machine: LADNN_DATA_DIR=PACK make gpu-check (PACK from benchmarks/make_datapack.py); within 8 minutes.
# GPU_CHECK=--cpu runs the same steps on the CPU on 8 images per split (tests/test_gpu_check.py does, in CI).
GPU_CHECK ?=
gpu-check:
	@$(DATA) $(PYTHON) benchmarks/gpu_check.py $(GPU_CHECK)

clean:
	rm -rf _build book/_generated
