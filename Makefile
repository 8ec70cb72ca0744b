# ShmLRU — common tasks. `make test` is what CI runs.
SWIFT ?= swift
SEGMENTS = ipcs -m | awk 'NR > 3 && $$1 ~ /^0x/ { n++ } END { print n + 0 }'

.PHONY: all build test example example-peers bench bench-quick stress fuzz sanitize clean

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
bench:
	@echo "make bench: not yet implemented"; exit 1

bench-quick:
	@echo "make bench-quick: not yet implemented"; exit 1

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
