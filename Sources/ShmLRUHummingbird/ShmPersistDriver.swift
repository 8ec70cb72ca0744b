#if Hummingbird
import Hummingbird
import ShmLRU
#endif
