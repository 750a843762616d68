# One command each: `make run` sets up and serves the app; `make test` sets up and runs every test
# (`make test-fast`: the fast tier only).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APP_STAMP := $(VENV)/.installed-app
DEV_STAMP := $(VENV)/.installed-dev
SYS_STAMP := $(VENV)/.installed-system
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-fast lint bench clean

$(APP_STAMP): requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: from a local CPU wheel where the machine has one, else PyPI.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(DEV_STAMP): $(APP_STAMP) requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# Debian packages the tests use (apt-packages.txt: Chromium for the browser test, the emoji
# font for the built-in model's data); only the missing ones are installed.
$(SYS_STAMP): apt-packages.txt
	@missing=$$(grep -v '^#' apt-packages.txt | while read -r p; do \
	  [ -z "$$p" ] || dpkg -s "$$p" >/dev/null 2>&1 || echo "$$p"; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    -o Dpkg::Use-Pty=0 $$missing >/dev/null; \
	fi
	test -d $(VENV) || $(PY) -m venv $(VENV)
	touch $@

run: $(APP_STAMP)
	$(BIN)/python app.py

test: $(DEV_STAMP) $(SYS_STAMP)
	$(BIN)/python -m pytest -n 2 -q -rs

# The fast tier: no model renders, processes or browser (markers in pyproject.toml).
test-fast: $(DEV_STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

bench: $(APP_STAMP)
	$(BIN)/python bench/sampler_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache
