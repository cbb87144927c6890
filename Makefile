# Two commands do all the set-up on a fresh clone:
#   make test   creates/refreshes .venv, runs ruff and the whole suite
#   make demo   creates/refreshes .venv, runs the two-master failover lab
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.salt-ha-installed

.PHONY: venv postgres test demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The shared job store test starts a throwaway PostgreSQL (tests/support/postgres.py).
# Debian's package puts initdb in /usr/lib/postgresql/<version>/bin, not on PATH.
# Installed only when missing, and only as root with apt-get (CI: root on Debian 12);
# otherwise, or when the install fails, those tests are skipped and say why.
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing the Debian package postgresql (initdb is missing)"; \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; } \
			|| echo "make: WARNING: apt-get install postgresql failed: the job store tests will be skipped"; \
	else \
		echo "make: WARNING: no PostgreSQL server (initdb) and no root apt-get: the job store tests will be skipped"; \
	fi

test: venv postgres
	$(PY) -m ruff check .
	$(PY) -m pytest -p no:cacheprovider

demo: venv
	$(PY) examples/demo.py

bench: venv
	$(PY) bench/probe.py
	$(PY) bench/failover.py
	$(PY) bench/beacon.py
	$(PY) bench/sync_keys.py
	$(PY) bench/returns.py
	$(PY) bench/storm.py

clean:
	rm -rf $(VENV) build *.egg-info .demo
