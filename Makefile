# ShmLRU — common tasks. `make test` is what CI runs.
SHELL := /bin/bash
SWIFT ?= swift
# The machine's segment ids (shmid), one a line.
SHM_IDS = awk 'NR > 1 { print $$2 }' /proc/sysvipc/shm
# Segments that were not there before (ids in $$before), that no process has
# attached, and whose creator has exited: what the run left behind. Segments of
# other programs running meanwhile (attached, or their creator alive) do not count.
LEAKED = awk -v before=" $$before " 'NR > 1 && index(before, " " $$2 " ") == 0 && $$7 == 0 { print $$2, $$5 }' /proc/sysvipc/shm \
	| while read id cpid; do [ -d /proc/$$cpid ] || printf '%s ' "$$id"; done

.PHONY: all build test example example-peers bench bench-quick stress fuzz sanitize clean

all: build

build:
	$(SWIFT) build

# Builds everything (the tests spawn the helper and example executables), runs the
# suite, then fails if it left any shared-memory segment behind. Tests run one at a
# time: Swift Testing runs synchronous tests on the cooperative pool (2 threads on
# 2 cores), and the long process-spawning ones would otherwise starve the async
# tests' tasks; the suite is CPU-bound, so it takes no longer.
test:
	@before=$$($(SHM_IDS) | tr '\n' ' '); \
	$(SWIFT) build --build-tests && $(SWIFT) test --skip-build --no-parallel; status=$$?; \
	leaked=$$($(LEAKED)); \
	if [ -n "$$leaked" ]; then \
		echo "make test: shared-memory segment(s) left behind (shmid): $$leaked"; ipcs -m; exit 1; \
	fi; \
	exit $$status

# The seed's example: a master and real worker processes sharing regions and an LRU.
example:
	$(SWIFT) build --product MasterWorker
	$$($(SWIFT) build --show-bin-path)/MasterWorker

# Two unrelated programs, one after the other, meeting through an ftok path key.
PEERS_KEY_FILE ?= /tmp/shmlru-example-peers.key
example-peers:
	$(SWIFT) build --product CacheProducer
	$(SWIFT) build --product CacheConsumer
	bin=$$($(SWIFT) build --show-bin-path); \
	$$bin/CacheProducer --path $(PEERS_KEY_FILE) && $$bin/CacheConsumer --path $(PEERS_KEY_FILE)

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
# make stress: >= 200 SIGKILLs (fault injection with survivors), the 8 x 60 s soak,
# and 50k seeded-mutator inputs, on the debug build.
stress:
	@before=$$($(SHM_IDS) | tr '\n' ' '); \
	$(SWIFT) build --build-tests && \
	SHMLRU_STRESS=1 $(SWIFT) test --skip-build --no-parallel --filter 'FaultInjectionTests|SoakTests|CorruptionTests'; status=$$?; \
	leaked=$$($(LEAKED)); \
	if [ -n "$$leaked" ]; then echo "make stress: segment(s) left behind (shmid): $$leaked"; ipcs -m; exit 1; fi; \
	exit $$status

# make fuzz: libFuzzer (swiftc -sanitize=fuzzer,address) over attach, verify() and
# operations on mutated cache segments, and attach, listen, lock, set/get on mutated
# store segments (header, lock table, waiter table, change log): the library's sources and Tests/Fuzz/FuzzEntry.swift
# compiled as one module. FUZZ_RUNS inputs (default 1M); a crash or finding fails.
FUZZ_DIR = .build-fuzz
FUZZ_RUNS ?= 1000000
FUZZ_FLAGS = -sanitize=fuzzer,address -parse-as-library -O -g -module-name ShmLRU -package-name ShmLRU \
	-swift-version 6 -enable-upcoming-feature MemberImportVisibility -I Sources/CShm
fuzz:
	mkdir -p $(FUZZ_DIR)/corpus
	$(SWIFT)c $(FUZZ_FLAGS) $$(find Sources/ShmLRU -name '*.swift' | sort) Tests/Fuzz/FuzzEntry.swift -o $(FUZZ_DIR)/shmlru-fuzz
	@# seeds: each image untouched, and each with lock-free reads; the store segment (bit 7) untouched and patched
	@for i in 000 001 002 003 040 041 100 140 200 201 202 203 220; do printf "\\$$i" > $(FUZZ_DIR)/corpus/seed-$$i; done
	ASAN_OPTIONS=malloc_context_size=0:detect_leaks=0 $(FUZZ_DIR)/shmlru-fuzz -runs=$(FUZZ_RUNS) -max_len=8192 -seed=1 -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/corpus 2>&1 | tee $(FUZZ_DIR)/last-run.log | grep -v '^#[0-9]*.*\(NEW\|REDUCE\)'; \
	exit $${PIPESTATUS[0]}

# make sanitize: the whole test suite under AddressSanitizer, then ThreadSanitizer.
# LSan reads Tests/lsan-suppressions.txt (XCTest's runner only); TSan reads
# Tests/tsan-suppressions.txt (only the seqlock's intentional racy copy).
sanitize:
	$(SWIFT) build --build-tests -Xswiftc -sanitize=address --scratch-path .build-asan
	LSAN_OPTIONS="suppressions=$(CURDIR)/Tests/lsan-suppressions.txt" \
		$(SWIFT) test --skip-build --no-parallel --scratch-path .build-asan
	$(SWIFT) build --build-tests -Xswiftc -sanitize=thread --scratch-path .build-tsan
	TSAN_OPTIONS="suppressions=$(CURDIR)/Tests/tsan-suppressions.txt halt_on_error=0" \
		$(SWIFT) test --skip-build --no-parallel --scratch-path .build-tsan

clean:
	$(SWIFT) package clean
	rm -rf .build .build-fuzz .build-asan .build-tsan bench-results.json bench-results.svg
