print("CacheConsumer: not yet")
