print("CacheProducer: not yet")
