# Two commands do all the set-up on a fresh clone:
#   make test   creates/refreshes .venv, runs ruff and the whole suite
#   make demo   creates/refreshes .venv, runs the two-master failover lab
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.salt-ha-installed

.PHONY: venv postgres netns-lab test demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# apt-get install of the Debian packages $(1), with one `apt-get update` first only when
# apt does not know them yet (a fresh image), so `make test` updates at most once.
apt_install = { { apt-cache show $(1) >/dev/null 2>&1 || apt-get update -q; } \
	&& DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(1); }

# The shared job store test starts a throwaway PostgreSQL (tests/support/postgres.py).
# Debian's package puts initdb in /usr/lib/postgresql/<version>/bin, not on PATH.
# Installed only when missing, and only as root with apt-get (CI: root on Debian 12);
# otherwise, or when the install fails, those tests are skipped and say why.
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing the Debian package postgresql (initdb is missing)"; \
		$(call apt_install,postgresql) \
			|| echo "make: WARNING: apt-get install postgresql failed: the job store tests will be skipped"; \
	else \
		echo "make: WARNING: no PostgreSQL server (initdb) and no root apt-get: the job store tests will be skipped"; \
	fi

# The front-door tests (tests/integration/test_frontdoor*.py, bench/frontdoor.py) run
# real keepalived, HAProxy and dnsmasq in network namespaces, partitioned with
# nftables (tests/support/netns_lab.py). Installed only when missing, and only as root
# with apt-get (one apt-get update for all of them); otherwise, or when the install
# fails, those tests are skipped and say why.
NETNS_LAB_PACKAGES := keepalived haproxy nftables dnsmasq-base iproute2 curl
NETNS_LAB_TOOLS := keepalived haproxy nft dnsmasq ip curl
netns-lab:
	@missing=""; for tool in $(NETNS_LAB_TOOLS); do \
		PATH="$$PATH:/usr/sbin:/sbin" command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; \
	done; \
	if [ -z "$$missing" ]; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing the Debian packages $(NETNS_LAB_PACKAGES) (missing:$$missing)"; \
		$(call apt_install,$(NETNS_LAB_PACKAGES)) \
			|| echo "make: WARNING: apt-get install $(NETNS_LAB_PACKAGES) failed: the front-door (netns) tests will be skipped"; \
	else \
		echo "make: WARNING: missing$$missing and no root apt-get: the front-door (netns) tests will be skipped"; \
	fi

test: venv postgres netns-lab
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
	$(PY) bench/drill.py

clean:
	rm -rf $(VENV) build *.egg-info .demo
