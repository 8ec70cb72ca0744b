# ShmLRU — common tasks. `make test` is what CI runs.
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
# suite, then fails if it left any shared-memory segment behind.
test:
	@before=$$($(SHM_IDS) | tr '\n' ' '); \
	$(SWIFT) build --build-tests && $(SWIFT) test --skip-build; status=$$?; \
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
