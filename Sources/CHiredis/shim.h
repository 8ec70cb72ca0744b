// CHiredis: hiredis (Debian libhiredis-dev), the Redis client ShmLRURedis talks
// through. Only the ShmLRURedis target depends on it; the ShmLRU library
// depends on the toolchain alone. Every helper here is `static inline`, so no .c
// file is compiled; each is prefixed `chiredis_`.
#ifndef CHIREDIS_SHIM_H
#define CHIREDIS_SHIM_H

#include <hiredis/hiredis.h>
#include <poll.h>
#include <sys/time.h>

/// A timeval of `milliseconds` (hiredis takes its timeouts as timevals).
static inline struct timeval chiredis_timeval(long long milliseconds) {
    struct timeval tv;
    if (milliseconds < 0) milliseconds = 0;
    tv.tv_sec = (time_t)(milliseconds / 1000);
    tv.tv_usec = (suseconds_t)((milliseconds % 1000) * 1000);
    return tv;
}

/// Waits up to `milliseconds` for the context's socket to be readable:
/// 1 readable (or hung up: the next read reports it), 0 not yet, -1 error (errno).
static inline int chiredis_wait_readable(const redisContext *c, int milliseconds) {
    struct pollfd p;
    p.fd = c->fd;
    p.events = POLLIN;
    p.revents = 0;
    int rc = poll(&p, 1, milliseconds);
    return rc > 0 ? 1 : rc;
}

/// The context's error flag (0: none) and message.
static inline int chiredis_error(const redisContext *c) { return c->err; }
static inline const char *chiredis_error_string(const redisContext *c) { return c->errstr; }

#endif
