# Debian's Chromium (headless) for the HTML report test: the report is opened offline
# and checked for its charts, its members and console errors, and a screenshot is kept.
CHROMIUM_SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: chromium

## Install chromium + a fallback font (Debian packages) when chromium is missing.
chromium:
	@if command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	set -e; \
	$(CHROMIUM_SUDO) apt-get -o DPkg::Lock::Timeout=600 update; \
	DEBIAN_FRONTEND=noninteractive $(CHROMIUM_SUDO) apt-get -o DPkg::Lock::Timeout=600 \
	  install -y --no-install-recommends chromium fonts-dejavu-core; \
	chromium --version

SYSTEM_DEPS += chromium
