#!/usr/bin/env python3
"""libCacheSim's LRU and S3-FIFO miss ratios on ShmLRUBench's traces.

Run by `ShmLRUBench policies` (make bench) with the interpreter of the venv that
`make bench-venv` creates. Arguments: NAME=PATH=CAPACITY ..., where PATH is a
file of little-endian UInt32 keys (the replay tool's format) and CAPACITY counts
objects (every object has size 1). Prints one line per argument:
NAME CAPACITY LRU_MISS_RATIO S3FIFO_MISS_RATIO
"""
import array
import sys

import libcachesim as lcs


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
        lru = miss_ratio(lambda: lcs.LRU(cache_size=capacity), path, keys)
        s3fifo = miss_ratio(lambda: lcs.S3FIFO(cache_size=capacity), path, keys)
        print(f"{name} {capacity} {lru:.5f} {s3fifo:.5f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
