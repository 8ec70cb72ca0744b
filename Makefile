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

.PHONY: all build build-all test example example-peers example-http bench bench-quick bench-policies bench-venv bench-redis bench-peers stress fuzz sanitize docs clean

# The Redis near cache (ShmLRURedis) needs libhiredis-dev to build and a
# redis-server for its tests: .ci/with-redis installs both if missing (saying so
# first), and runs a command with a server of its own on a free port (stopped
# after, even on failure). Only the test, stress, sanitize and Redis bench
# targets call it: `make build` installs nothing.
WITH_REDIS = .ci/with-redis
# Every integration is behind a package trait (Package.swift); the project's own
# builds enable them all, FaultInjection (the test-only kill points) included.
ALL_TRAITS = --enable-all-traits

all: build

# The core library and its examples: the Swift toolchain alone.
build:
	$(SWIFT) build

# Every product, integrations included: needs libhiredis-dev (SwiftPM names the
# apt package if it is missing); runs no package manager itself.
build-all:
	$(SWIFT) build $(ALL_TRAITS)

# Builds everything (the tests spawn the helper and example executables), runs the
# suite, then fails if it left any shared-memory segment behind. Tests run one at a
# time: Swift Testing runs synchronous tests on the cooperative pool (2 threads on
# 2 cores), and the long process-spawning ones would otherwise starve the async
# tests' tasks; the suite is CPU-bound, so it takes no longer.
test:
	@before=$$($(SHM_IDS) | tr '\n' ' '); \
	$(WITH_REDIS) --install && $(SWIFT) build --build-tests $(ALL_TRAITS) && \
	$(WITH_REDIS) $(SWIFT) test --skip-build --no-parallel $(ALL_TRAITS); status=$$?; \
	leaked=$$($(LEAKED)); \
	if [ -n "$$leaked" ]; then \
		echo "make test: shared-memory segment(s) left behind (shmid): $$leaked"; ipcs -m; exit 1; \
	fi; \
	exit $$status

# shm-typed-lru's example (test/example.js): a master and real worker processes sharing regions and an LRU.
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

# cluster-shared-memory's HTTP test: a Hummingbird 2 server of N worker processes
# sharing one port (Examples/HTTPCounter, a nested package), loaded from loopback
# with ab (apache2-utils, installed if missing): req/s per variant (mutex,
# withLock, update, no lock; the median of 3 interleaved rounds), the counter
# checked against the successful responses, and issue 27's ratios (also the last
# section of make bench).
example-http:
	$(SWIFT) build -c release --traits Hummingbird --product HTTPCounter
	command -v ab >/dev/null || { echo "example-http: installing apache2-utils (apt-get)"; apt-get update && apt-get install -y apache2-utils; }
	Examples/HTTPCounter/load.sh "$$($(SWIFT) build -c release --traits Hummingbird --show-bin-path)/HTTPCounter"

# --- performance (issue: make bench) ---
# The fixed workload of ../shared/bench/WORKLOAD.md, release build: a table on stdout,
# JSON in $$BENCH_JSON (default bench-results.json), an SVG chart in $$BENCH_SVG
# (default bench-results.svg). bench-quick: fewer runs and operations (< 1 minute).
# Then the eviction policies' section (Sources/ShmLRUBench/PolicyBench.swift): miss
# ratios on synthetic traces and on the real traces in $$SHMLRU_TRACES, next to
# libCacheSim's (LRU, ARC, SIEVE, S3-FIFO, W-TinyLFU) when `make bench-venv` was run,
# and each policy's hit throughput. bench-policies runs that section alone.
#
# Real traces are not in the repository and `make bench` fetches nothing: set
# SHMLRU_TRACES to a directory of them; the table lists those present, each read
# in the format its file name says (Sources/ShmLRUBench/Replay.swift: .be32 / .be64
# Caffeine's 32- and 64-bit big-endian key streams, .lirs LIRS text,
# .oracleGeneral.bin and .csv libCacheSim's). The set measured for issue 29:
#   git clone https://github.com/ben-manes/caffeine; R=simulator/src/main/resources/com/github/benmanes/caffeine/cache/simulator/parser
#   xz -dc $$R/cache2k/web07.trace.xz > web07.be32              (web; and orm-busy: database ORM, cache2k)
#   xz -dc $$R/scarab/scarab-recs.trace.xz > scarab-recs.be64   (recommendations)
#   xz -dc $$R/cloud_physics/w106.trace.xz > w106.be32          (block I/O)
#   gzip -dc $$R/lirs/loop.trace.gz > loop.lirs                 (and 2_pools, sprite, multi2)
#   https://github.com/1a1a11a/libCacheSim data/: cloudPhysicsIO.oracleGeneral.bin, cloudPhysicsIO.csv
# then: make bench SHMLRU_TRACES=/path/to/traces
# Last, the store sized by memory (Sources/ShmLRUBench/MemoryBench.swift): memory
# efficiency under log-uniform 64 B–64 KiB churn, a 1 MiB get against memcpy, and
# 200-byte gets against the record-sized store, each marked met or missed.
# Then the snapshot section, and last the HTTP counter (make example-http: a
# Hummingbird server of 4 worker processes; its release build takes minutes the
# first time), whose lock variants' ratios close the key-lock figures printed above.
bench:
	$(SWIFT) build -c release --product ShmLRUBench
	$$($(SWIFT) build -c release --show-bin-path)/ShmLRUBench
	SHMLRU_TRACES=$(SHMLRU_TRACES) $$($(SWIFT) build -c release --show-bin-path)/ShmLRUBench policies
	$$($(SWIFT) build -c release --show-bin-path)/ShmLRUBench memory
	$$($(SWIFT) build -c release --show-bin-path)/ShmLRUBench snapshot
	$(MAKE) --no-print-directory example-http

bench-quick:
	$(SWIFT) build -c release --product ShmLRUBench
	$$($(SWIFT) build -c release --show-bin-path)/ShmLRUBench --quick
	$$($(SWIFT) build -c release --show-bin-path)/ShmLRUBench policies --quick
	$$($(SWIFT) build -c release --show-bin-path)/ShmLRUBench memory --quick
	$$($(SWIFT) build -c release --show-bin-path)/ShmLRUBench snapshot --quick

bench-policies:
	$(SWIFT) build -c release --product ShmLRUBench
	SHMLRU_TRACES=$(SHMLRU_TRACES) $$($(SWIFT) build -c release --show-bin-path)/ShmLRUBench policies

# The bench's optional reference: libCacheSim (PyPI), pinned, in a venv of its own.
# Neither the library nor `make test` needs Python.
BENCH_VENV ?= .bench-venv
LIBCACHESIM_VERSION = 0.3.5
bench-venv:
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet libcachesim==$(LIBCACHESIM_VERSION)

# The Redis near cache (Sources/ShmLRURedisBench): a near-cache hit vs a Redis
# GET round trip on loopback, same run (issue 17); invalidation latency p50 /
# p99 / max between two machines' stores; get-or-load with a 100 ms loader from
# 8 processes on 2 machines, loader runs counted (issue 25). Quick: ShmLRURedisBench --quick.
bench-redis:
	$(WITH_REDIS) --install
	$(SWIFT) build -c release --traits Redis --product ShmLRURedisBench
	$(WITH_REDIS) $$($(SWIFT) build -c release --traits Redis --show-bin-path)/ShmLRURedisBench

# make bench-peers: Boost.Interprocess (unordered_map + interprocess_mutex) and LMDB
# on the same workload (get-hit, set-update; 1 and 2 processes; 10K and 1M records),
# small C++ programs in Sources/ShmLRUBench/Peers (excluded from the Swift package),
# built with Debian's libboost-dev and liblmdb-dev (installed here if missing).
# Writes $(PEERS_JSON), which `make bench` then prints beside ShmLRU's figures.
PEERS_DIR = .build-peers
PEERS_OPS ?= 1000000
PEERS_RUNS ?= 5
PEERS_JSON ?= bench-peers.json
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)
bench-peers:
	@if [ ! -f /usr/include/boost/interprocess/managed_shared_memory.hpp ] || [ ! -f /usr/include/lmdb.h ]; then \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y libboost-dev liblmdb-dev g++ || exit 1; \
	fi
	mkdir -p $(PEERS_DIR)
	g++ -O2 -std=c++17 -o $(PEERS_DIR)/peers Sources/ShmLRUBench/Peers/peers.cpp -llmdb -lpthread -lrt
	: > $(PEERS_JSON).tmp
	for capacity in 10000 1000000; do for store in boost-interprocess lmdb; do \
		$(PEERS_DIR)/peers $$store $$capacity $(PEERS_OPS) $(PEERS_RUNS) >> $(PEERS_JSON).tmp || exit 1; \
	done; done
	mv $(PEERS_JSON).tmp $(PEERS_JSON)
	cat $(PEERS_JSON)

# --- reliability (issue: make stress / fuzz / sanitize) ---
# make stress: >= 200 SIGKILLs (fault injection with survivors), the 8 x 60 s soak,
# 60 s of SIGKILLed key-lock holders and waiters (KeyLockStressTests),
# and 50k seeded-mutator inputs, on the debug build.
stress:
	@before=$$($(SHM_IDS) | tr '\n' ' '); \
	$(WITH_REDIS) --install && $(SWIFT) build --build-tests $(ALL_TRAITS) && \
	SHMLRU_STRESS=1 $(SWIFT) test --skip-build --no-parallel $(ALL_TRAITS) --filter 'FaultInjectionTests|SoakTests|CorruptionTests|LivenessStressTests|KeyLockStressTests'; status=$$?; \
	leaked=$$($(LEAKED)); \
	if [ -n "$$leaked" ]; then echo "make stress: segment(s) left behind (shmid): $$leaked"; ipcs -m; exit 1; fi; \
	exit $$status

# make fuzz: libFuzzer (swiftc -sanitize=fuzzer,address) over attach, verify() and
# operations on mutated cache segments, and attach, listen, lock, set/get on mutated
# store segments (header, lock table, waiter table, change log), and restores of mutated snapshot files
# (inputs starting with "P"): the library's sources and Tests/Fuzz/FuzzEntry.swift
# compiled as one module. FUZZ_RUNS inputs; a crash or finding fails.
# Default 150k, so that the whole target ends within 10 minutes on the 2-core VM
# while other builds run: the compile takes ~2.5 min, and inputs run at ~440/s
# there (200k took 453 s, 10 min with the compile; ~20% of the corpus were store
# inputs); 1M took ~37 min. Longer: make fuzz FUZZ_RUNS=1000000.
FUZZ_DIR = .build-fuzz
FUZZ_RUNS ?= 150000
FUZZ_FLAGS = -sanitize=fuzzer,address -D SHMLRU_TESTING -parse-as-library -O -g -module-name ShmLRU -package-name ShmLRU \
	-swift-version 6 -enable-upcoming-feature MemberImportVisibility -I Sources/CShm
fuzz:
	mkdir -p $(FUZZ_DIR)/corpus
	$(SWIFT)c $(FUZZ_FLAGS) $$(find Sources/ShmLRU -name '*.swift' | sort) Tests/Fuzz/FuzzEntry.swift -o $(FUZZ_DIR)/shmlru-fuzz
	@# seeds: each image untouched, and each with lock-free reads (bit 0x80: the SIEVE and S3-FIFO images);
	@# inputs starting with "S" go to the store segment (Tests/Fuzz/FuzzEntry.swift): untouched and patched
	@for i in 000 001 002 003 040 041 100 140 200 201 202 240 241 242; do printf "\\$$i" > $(FUZZ_DIR)/corpus/seed-$$i; done
	@for i in 000 001 002 003 020; do printf "S\\$$i" > $(FUZZ_DIR)/corpus/seed-store-$$i; done; printf "S" > $(FUZZ_DIR)/corpus/seed-store
	@for i in 000 001 002 003 020 040 050 140; do printf "M\\$$i" > $(FUZZ_DIR)/corpus/seed-memory-$$i; done
	@# inputs starting with "P" are snapshot files (image 0-2, target bit 2, raw bit 7; then 4-byte patches: set, xor, cut, insert)
	@for i in 000 001 002 004 005 006 200; do printf "P\\$$i" > $(FUZZ_DIR)/corpus/seed-snapshot-$$i; done
	@printf "P\\001\\000\\100\\000\\377\\002\\000\\002\\000" > $(FUZZ_DIR)/corpus/seed-snapshot-patched
	@# no Swift backtracer: after an ASan report it can hang on the dead process; libFuzzer and ASan report
	SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=malloc_context_size=0:detect_leaks=0 $(FUZZ_DIR)/shmlru-fuzz -runs=$(FUZZ_RUNS) -max_len=8192 -seed=1 -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/corpus 2>&1 | tee $(FUZZ_DIR)/last-run.log | grep -v '^#[0-9]*.*\(NEW\|REDUCE\)'; \
	exit $${PIPESTATUS[0]}

# make sanitize: the test suite under AddressSanitizer, then ThreadSanitizer, with
# every trait but the two web frameworks (Hummingbird and Vapor, whose own code the
# sanitizers would rebuild for an hour on 2 cores and whose tests exercise the store
# through the same calls as the rest). LSan reads Tests/lsan-suppressions.txt
# (XCTest's runner only); TSan reads Tests/tsan-suppressions.txt.
SANITIZE_TRAITS = --traits FaultInjection,CLI,Metrics,Logging,Lifecycle,Redis
sanitize:
	$(WITH_REDIS) --install
	$(SWIFT) build --build-tests $(SANITIZE_TRAITS) -Xswiftc -sanitize=address --scratch-path .build-asan
	LSAN_OPTIONS="suppressions=$(CURDIR)/Tests/lsan-suppressions.txt" \
		$(WITH_REDIS) $(SWIFT) test --skip-build --no-parallel $(SANITIZE_TRAITS) --scratch-path .build-asan
	$(SWIFT) build --build-tests $(SANITIZE_TRAITS) -Xswiftc -sanitize=thread --scratch-path .build-tsan
	TSAN_OPTIONS="suppressions=$(CURDIR)/Tests/tsan-suppressions.txt halt_on_error=0" \
		$(WITH_REDIS) $(SWIFT) test --skip-build --no-parallel $(SANITIZE_TRAITS) --scratch-path .build-tsan

# make docs: the DocC documentation of every library product (the core's catalog,
# Sources/ShmLRU/ShmLRU.docc, and each integration's), built by swift-docc-plugin,
# which SHMLRU_DOCS=1 adds to the package for this build only (scratch path
# .build-docs), with every integration trait enabled. Fails on any DocC warning
# (SwiftPM's note about a dependency's unhandled files is not one of ours). Archives:
# .build-docs/<Product>.doccarchive (`docc preview` serves one).
DOCS_DIR = .build-docs
DOC_TRAITS = --traits Hummingbird,Vapor,Redis,Metrics,Logging,Lifecycle
DOC_TARGETS = ShmLRU ShmLRUHummingbird ShmLRUVapor ShmLRURedis ShmLRUMetrics ShmLRULogging ShmLRULifecycle
docs:
	mkdir -p $(DOCS_DIR)
	SHMLRU_DOCS=1 $(SWIFT) package --scratch-path $(DOCS_DIR) $(DOC_TRAITS) --allow-writing-to-directory $(DOCS_DIR) \
		generate-documentation $(foreach t,$(DOC_TARGETS),--target $(t)) --output-path $(DOCS_DIR)/archives 2>&1 | tee $(DOCS_DIR)/docs.log; \
	status=$${PIPESTATUS[0]}; [ $$status -eq 0 ] || exit $$status; \
	if grep 'warning:' $(DOCS_DIR)/docs.log | grep -v 'which are unhandled; explicitly declare them as resources'; then \
		echo "make docs: DocC warnings (above)"; exit 1; fi

clean:
	$(SWIFT) package clean
	rm -rf .build .build-fuzz .build-asan .build-tsan .build-docs .build-peers .bench-venv bench-results.json bench-results.svg bench-core-results.json bench-peers.json
