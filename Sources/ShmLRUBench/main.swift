print("ShmLRUBench: not yet")
