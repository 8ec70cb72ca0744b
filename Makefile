# ShmLRU — common tasks. `make test` is what CI runs.
SHELL := /bin/bash
SWIFT ?= swift
# Segments not yet marked for removal (a "dest" one is gone once its last user detaches).
SEGMENTS = ipcs -m | awk 'NR > 3 && $$1 ~ /^0x/ && $$NF != "dest" { n++ } END { print n + 0 }'

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
bench:
	@echo "make bench: not yet implemented"; exit 1

bench-quick:
	@echo "make bench-quick: not yet implemented"; exit 1

# --- reliability (issue: make stress / fuzz / sanitize) ---
# make stress: >= 200 SIGKILLs (fault injection with survivors), the 8 x 60 s soak,
# and 50k seeded-mutator inputs, on the debug build.
stress:
	@before=$$($(SEGMENTS)); \
	$(SWIFT) build --build-tests && \
	SHMLRU_STRESS=1 $(SWIFT) test --skip-build --filter 'FaultInjectionTests|SoakTests|CorruptionTests'; status=$$?; \
	after=$$($(SEGMENTS)); \
	if [ "$$after" -gt "$$before" ]; then echo "make stress: $$((after - before)) segment(s) left behind"; ipcs -m; exit 1; fi; \
	exit $$status

# make fuzz: libFuzzer (swiftc -sanitize=fuzzer,address) over attach, verify() and
# operations on mutated segments: the library's sources and Fuzz/FuzzEntry.swift
# compiled as one module. FUZZ_RUNS inputs (default 1M); a crash or finding fails.
FUZZ_DIR = .build-fuzz
FUZZ_RUNS ?= 1000000
FUZZ_FLAGS = -sanitize=fuzzer,address -parse-as-library -O -g -module-name ShmLRU -package-name ShmLRU \
	-swift-version 6 -enable-upcoming-feature MemberImportVisibility -I Sources/CShm
fuzz:
	mkdir -p $(FUZZ_DIR)/corpus
	$(SWIFT)c $(FUZZ_FLAGS) $$(find Sources/ShmLRU -name '*.swift' | sort) Fuzz/FuzzEntry.swift -o $(FUZZ_DIR)/shmlru-fuzz
	@# seeds: each image untouched, and each with lock-free reads
	@for i in 000 001 002 003 040 041 100 140; do printf "\\$$i" > $(FUZZ_DIR)/corpus/seed-$$i; done
	ASAN_OPTIONS=malloc_context_size=0:detect_leaks=0 $(FUZZ_DIR)/shmlru-fuzz -runs=$(FUZZ_RUNS) -max_len=8192 -seed=1 -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/corpus 2>&1 | tee $(FUZZ_DIR)/last-run.log | grep -v '^#[0-9]*.*\(NEW\|REDUCE\)'; \
	exit $${PIPESTATUS[0]}

# make sanitize: the whole test suite under AddressSanitizer, then ThreadSanitizer.
# LSan reads Tests/lsan-suppressions.txt (XCTest's runner only); TSan reads
# Tests/tsan-suppressions.txt (only the seqlock's intentional racy copy).
sanitize:
	$(SWIFT) build --build-tests -Xswiftc -sanitize=address --scratch-path .build-asan
	LSAN_OPTIONS="suppressions=$(CURDIR)/Tests/lsan-suppressions.txt" \
		$(SWIFT) test --skip-build --scratch-path .build-asan
	$(SWIFT) build --build-tests -Xswiftc -sanitize=thread --scratch-path .build-tsan
	TSAN_OPTIONS="suppressions=$(CURDIR)/Tests/tsan-suppressions.txt halt_on_error=0" \
		$(SWIFT) test --skip-build --scratch-path .build-tsan

clean:
	$(SWIFT) package clean
	rm -rf .build .build-fuzz .build-asan .build-tsan bench-results.json bench-results.svg
