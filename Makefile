# Two commands do all the set-up on a fresh clone:
#   make test   creates/refreshes .venv, runs ruff and the whole suite
#   make demo   creates/refreshes .venv, runs the two-master failover lab
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.salt-ha-installed

.PHONY: venv test demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -p no:cacheprovider

demo: venv
	$(PY) examples/demo.py

bench: venv
	$(PY) bench/probe.py
	$(PY) bench/failover.py
	$(PY) bench/beacon.py
	$(PY) bench/sync_keys.py

clean:
	rm -rf $(VENV) build *.egg-info .demo
