#!/usr/bin/env python3
"""libCacheSim's miss ratios on ShmLRUBench's traces (the reference column of `make bench`).

Run by `ShmLRUBench policies` (make bench) with the interpreter of the venv that
`make bench-venv` creates (libcachesim pinned there: 0.3.5). Arguments:
NAME=PATH=CAPACITY ..., where PATH is a file of little-endian UInt32 keys (the
replay tool's own format: ShmLRUBench converts every real trace to it first, so
both sides see the same keys) and CAPACITY counts objects (every object has size
1). Prints one line per argument:

    NAME CAPACITY LRU ARC SIEVE S3FIFO WTINYLFU

The policies are libCacheSim's own, with their defaults: `S3FIFO` is the current
variant (small queue 10 %, ghost 90 %, move-to-main threshold 2; not the paper's
`S3-FIFOv0`), `WTinyLFU` a 1 % window (at least one object) in front of an SLRU main cache.
libCacheSim's S3FIFO needs a small queue of at least one object: capacities
below 10 are not asked for.
"""
import array
import sys

import libcachesim as lcs

POLICIES = [
    ("LRU", lambda c: lcs.LRU(cache_size=c)),
    ("ARC", lambda c: lcs.ARC(cache_size=c)),
    ("SIEVE", lambda c: lcs.Sieve(cache_size=c)),
    ("S3FIFO", lambda c: lcs.S3FIFO(cache_size=c)),
    # A window of at least one object: libCacheSim's 1 % rounds to none below 100
    # objects, and its W-TinyLFU then misses every request.
    ("WTINYLFU", lambda c: lcs.WTinyLFU(cache_size=c, window_size=max(0.01, 1.0 / c))),
]


def miss_ratio_by_reader(cache, path):
    """libCacheSim's own binary reader: one little-endian UInt32 object id per request, size 1."""
    params = lcs.ReaderInitParam(binary_fmt_str="<I", ignore_obj_size=True)
    params.obj_id_field = 1
    reader = lcs.TraceReader(path, lcs.TraceType.BIN_TRACE, params)
    return cache.process_trace(reader)[0]


def miss_ratio_by_requests(cache, keys):
    """The same, one request at a time (slower; for a binding without the reader)."""
    request = lcs.Request()
    request.obj_size = 1
    misses = 0
    get = cache.get
    for key in keys:
        request.obj_id = key
        if not get(request):
            misses += 1
    return misses / len(keys) if keys else 0.0


def miss_ratio(make_cache, path, keys):
    try:
        return miss_ratio_by_reader(make_cache(), path)
    except Exception:  # noqa: BLE001 - any binding without the reader
        return miss_ratio_by_requests(make_cache(), keys)


def main(arguments):
    traces = {}
    for argument in arguments:
        name, path, capacity = argument.rsplit("=", 2)
        if path not in traces:
            keys = array.array("I")
            with open(path, "rb") as trace:
                keys.frombytes(trace.read())
            if sys.byteorder != "little":
                keys.byteswap()
            traces[path] = keys
        keys = traces[path]
        capacity = int(capacity)
        ratios = [miss_ratio(lambda: make(capacity), path, keys) for _, make in POLICIES]
        print(name, capacity, " ".join(f"{r:.5f}" for r in ratios), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
