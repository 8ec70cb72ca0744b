print("MasterWorker: not yet")
