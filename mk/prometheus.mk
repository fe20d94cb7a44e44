# Prometheus and promtool from Debian's package, for the metering integration tests and
# benchmark. Tests start their own prometheus on loopback with their own data folder, so
# the package's system service is stopped and disabled if the init system started it.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: prometheus

## Install prometheus + promtool (Debian package) when either is missing.
prometheus:
	@if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then \
	  exit 0; \
	fi; \
	set -e; \
	$(SUDO) apt-get update; \
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends prometheus; \
	if [ -d /run/systemd/system ]; then $(SUDO) systemctl disable --now prometheus || true; fi; \
	if [ -x /etc/init.d/prometheus ]; then $(SUDO) /etc/init.d/prometheus stop >/dev/null 2>&1 || true; fi; \
	prometheus --version | head -1

SYSTEM_DEPS += prometheus
