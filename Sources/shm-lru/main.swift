print("shm-lru: not yet")
