# The engine compiled with mypyc (mk/engine_build.py): extension modules beside
# scheduler/engine/*.py, which Python prefers, rebuilt whenever a source changes.
# scheduler/engine_build.py falls back to the sources when they differ from what was
# compiled, so an edit never runs stale code. C files and objects stay under $(CACHE).
ENGINE_SOURCES := $(sort $(wildcard scheduler/engine/*.py))
ENGINE_BUILT := scheduler/engine/compiled.json

.PHONY: engine
## The compiled engine (about a minute; nothing to do when the sources did not change).
engine: $(ENGINE_BUILT)

$(ENGINE_BUILT): $(STAMP) $(ENGINE_SOURCES) mk/engine_build.py
	@mkdir -p $(CACHE)/engine
	@$(BIN)/python mk/engine_build.py $(CACHE)/engine > $(CACHE)/engine/build.log 2>&1 \
	  || { cat $(CACHE)/engine/build.log; exit 1; }
	@echo "engine compiled (log: $(CACHE)/engine/build.log)"
