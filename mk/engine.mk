# The engine compiled with mypyc (mk/engine_build.py): extension modules beside
# scheduler/engine/*.py and the simulator's modules that run at every event
# (scheduler.engine_build.SIM_MODULES), which Python prefers, rebuilt whenever a source
# changes.
# scheduler/engine_build.py falls back to the sources when they differ from what was
# compiled, so an edit never runs stale code. C files and objects stay under $(CACHE).
# The build imports scheduler.engine_build (its list of sources and their digests) with
# FAIRPOOL_ENGINE=interpreted, so an exported FAIRPOOL_ENGINE=compiled cannot refuse it.
ENGINE_SOURCES := $(sort $(wildcard scheduler/engine/*.py)) \
  $(foreach m,cluster simulator waiting after_cycle,scheduler/sim/$(m).py)
ENGINE_BUILT := scheduler/engine/compiled.json

.PHONY: engine
## The compiled engine (about 2 min 15 s, profile-guided; nothing to do when the sources did not change).
engine: $(ENGINE_BUILT)

ENGINE_SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(ENGINE_BUILT): $(STAMP) $(ENGINE_SOURCES) mk/engine_build.py
	@command -v cc >/dev/null 2>&1 || { set -e; \
	  $(ENGINE_SUDO) apt-get -o DPkg::Lock::Timeout=600 update; \
	  DEBIAN_FRONTEND=noninteractive $(ENGINE_SUDO) apt-get -o DPkg::Lock::Timeout=600 \
	    install -y --no-install-recommends gcc libc6-dev; }
	@mkdir -p $(CACHE)/engine
	@FAIRPOOL_ENGINE=interpreted $(BIN)/python mk/engine_build.py $(CACHE)/engine \
	  > $(CACHE)/engine/build.log 2>&1 \
	  || { cat $(CACHE)/engine/build.log; exit 1; }
	@echo "engine compiled (log: $(CACHE)/engine/build.log)"
