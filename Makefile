# Two commands do all the set-up on a fresh Debian/Ubuntu machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint system-packages test-system-packages clean

run: $(VENV)/.runtime system-packages
	$(BIN)/streamlit run streamlit_app.py

test: $(VENV)/.dev test-system-packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

$(VENV)/.runtime: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

system-packages:
	sh scripts/install_system_packages.sh $$(cat packages.txt)

test-system-packages:
	sh scripts/install_system_packages.sh $$(cat packages.txt) chromium

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
