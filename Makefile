# Two commands do everything on a fresh machine (see README.md):
#   make book   builds the Jupyter Book (PROFILE=quick by default; smoke, paper)
#   make test   runs the tests, including a smoke build of the book
PROFILE ?= quick
PYTHON ?= python3
export LADNN_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: install book test lint clean gpu-check

install:
	$(PYTHON) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PYTHON) -m pip install -q -e ".[book,test]"

book: install
	$(PYTHON) -m ladnn.book --profile $(PROFILE)

test: install
	$(PYTHON) -m ruff check ladnn tests
	$(PYTHON) -m pytest -q tests

lint:
	$(PYTHON) -m ruff check ladnn tests

gpu-check:
	$(PYTHON) benchmarks/gpu_check.py

clean:
	rm -rf _build book/_generated
