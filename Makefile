# One command sets up and runs the main job, one sets up and passes the tests.
#   make drill   -> every drill on the embedded emulator, reports in ./dbdrill-reports
#   make test    -> the whole test suite (ruff and mypy included)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT_PACKAGES := postgresql pgbouncer iproute2 python3-minimal
PYTEST_ARGS ?=

.PHONY: setup system-packages drill test bench lint clean

setup: system-packages $(STAMP)

# Debian packages for the real engines (and the system python3 that IAM auth's PAM check runs under). Installed only when missing and when we may (root);
# otherwise tell the user what to install.
system-packages:
	@missing=""; \
	command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing="$$missing pgbouncer"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v pg_config >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	[ -x /usr/bin/python3 ] || missing="$$missing python3-minimal"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	  else \
	    echo "missing system packages:$$missing -- run: sudo apt-get install $(APT_PACKAGES)"; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

drill: setup
	$(VENV)/bin/dbdrill drill all --report-dir dbdrill-reports

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/mypy

clean:
	rm -rf $(VENV) dbdrill-reports .mypy_cache .ruff_cache .pytest_cache
