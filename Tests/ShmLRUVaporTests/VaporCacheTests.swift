#if Vapor
import Testing
#endif
