# `make train` and `make test` set up .venv on first use (a second call installs nothing).
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: train test lint bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade "pip>=24"
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/python train.py $(ARGS)

test: $(STAMP)
	WANDB_MODE=offline $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(VENV)/bin/python -m dxai.bench all --json

gpu-check: $(STAMP)
	$(VENV)/bin/python -m dxai.bench gpu --json

clean:
	rm -rf $(VENV) runs
