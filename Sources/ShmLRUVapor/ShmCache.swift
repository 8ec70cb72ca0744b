#if Vapor
import ShmLRU
import Vapor
#endif
