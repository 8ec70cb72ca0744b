# ShmLRU — common tasks. `make test` is what CI runs.
SWIFT ?= swift
SEGMENTS = ipcs -m | awk 'NR > 3 && $$1 ~ /^0x/ { n++ } END { print n + 0 }'

.PHONY: all build test example bench bench-quick stress fuzz sanitize clean

all: build

build:
	$(SWIFT) build

# Builds everything (the tests spawn the helper and example executables), runs the
# suite, then fails if it left any shared-memory segment behind.
test:
	@before=$$($(SEGMENTS)); \
	$(SWIFT) build --build-tests && $(SWIFT) test --skip-build; status=$$?; \
	after=$$($(SEGMENTS)); \
	if [ "$$after" -gt "$$before" ]; then \
		echo "make test: $$((after - before)) shared-memory segment(s) left behind:"; ipcs -m; exit 1; \
	fi; \
	exit $$status

example:
	$(SWIFT) build --product MasterWorker
	$$($(SWIFT) build --show-bin-path)/MasterWorker

# --- performance (issue: make bench) ---
# The fixed workload of ../shared/bench/WORKLOAD.md, release build: a table on stdout,
# JSON in $$BENCH_JSON (default bench-results.json), an SVG chart in $$BENCH_SVG
# (default bench-results.svg). bench-quick: fewer runs and operations (< 1 minute).
bench:
	$(SWIFT) build -c release --product ShmLRUBench
	$$($(SWIFT) build -c release --show-bin-path)/ShmLRUBench

bench-quick:
	$(SWIFT) build -c release --product ShmLRUBench
	$$($(SWIFT) build -c release --show-bin-path)/ShmLRUBench --quick

# --- reliability (issue: make stress / fuzz / sanitize) ---
stress:
	@echo "make stress: not yet implemented"; exit 1

fuzz:
	@echo "make fuzz: not yet implemented"; exit 1

sanitize:
	@echo "make sanitize: not yet implemented"; exit 1

clean:
	$(SWIFT) package clean
	rm -rf .build bench-results.json bench-results.svg
