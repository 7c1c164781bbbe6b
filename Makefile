# The two commands of the README: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SESSION ?= resources/sessions/demo.json

.PHONY: run test lint bench mutants clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	@$(BIN)/python -m app.launch $(SESSION)

test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -p no:cacheprovider -n auto --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports --no-cache

bench: $(STAMP)
	$(BIN)/dirtylog bench

# Mutation testing (not part of `make test`: minutes per group).  GROUPS="dirtyring memslots"
# picks groups of mutation/modules.toml; the default is all of them.
MUTANTS_STAMP := $(VENV)/.mutants-installed
$(MUTANTS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,mutants]'
	@touch $(MUTANTS_STAMP)

mutants: $(MUTANTS_STAMP)
	nice -n 10 $(BIN)/python mutation/run.py $(GROUPS) $(MUTANTS_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
