# PostgreSQL from Debian's package, for the ledger's integration tests and the metering
# benchmark. Tests start their own server on loopback (tests/pgtest: initdb into a
# temporary folder, a free port), so the package's own cluster service is stopped and
# disabled if the init system started it.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: postgresql

## Install PostgreSQL (Debian package) when initdb is missing.
postgresql:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && getent passwd postgres >/dev/null; then \
	  exit 0; \
	fi; \
	set -e; \
	$(SUDO) apt-get update; \
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends postgresql; \
	if [ -d /run/systemd/system ]; then $(SUDO) systemctl disable --now postgresql || true; fi; \
	if [ -x /etc/init.d/postgresql ]; then $(SUDO) /etc/init.d/postgresql stop >/dev/null 2>&1 || true; fi; \
	ls /usr/lib/postgresql/*/bin/postgres
