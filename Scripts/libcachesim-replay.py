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


def miss_ratio(cache, keys):
    request = lcs.Request()
    request.obj_size = 1
    misses = 0
    get = cache.get
    for key in keys:
        request.obj_id = key
        if not get(request):
            misses += 1
    return misses / len(keys) if keys else 0.0


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
        lru = miss_ratio(lcs.LRU(cache_size=capacity), keys)
        s3fifo = miss_ratio(lcs.S3FIFO(cache_size=capacity), keys)
        print(f"{name} {capacity} {lru:.5f} {s3fifo:.5f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
