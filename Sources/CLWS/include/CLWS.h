// CLWS: the small C surface Swift needs from Debian's libwebsockets 4.1.6.
// Swift cannot import function-like macros (LWS_PRE), variadic functions (_lws_log)
// or the multi-line option macros, so each gets a CLWS_ symbol here. Nothing else.
#ifndef CLWS_H
#define CLWS_H

#include <libwebsockets.h>
#include <malloc.h>
#include <stddef.h>
#include <stdint.h>

/// LWS_PRE: headroom lws needs before every buffer handed to lws_write().
extern const size_t CLWS_PRE;

/// Forwards one already-formatted line to lws's logger (lwsl_* are variadic macros).
void CLWS_log(int level, const char *_Nonnull message);

/// Server options used by the gateway (some are multi-bit macros that do not import).
extern const uint64_t CLWS_OPTION_VALIDATE_UTF8;
extern const uint64_t CLWS_OPTION_DO_SSL_GLOBAL_INIT;
extern const uint64_t CLWS_OPTION_DISABLE_IPV6;
extern const uint64_t CLWS_OPTION_LIBEV;
extern const uint64_t CLWS_OPTION_EXPLICIT_VHOSTS;
extern const uint64_t CLWS_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE;
extern const uint64_t CLWS_OPTION_DISABLE_OS_CA_CERTS;

/// Per-vhost TLS context tuning for many idle connections (release buffers, no server session cache).
void CLWS_ssl_ctx_tune(SSL_CTX *_Nonnull ctx);

/// accept4(2) with SOCK_NONBLOCK|SOCK_CLOEXEC: glibc declares it only under _GNU_SOURCE, which Swift's
/// Glibc module does not define.
int CLWS_accept_nonblocking(int listen_fd);

/// Writes the 2..10-byte server-to-client WebSocket frame header (FIN set, unmasked)
/// for `opcode` and `length` into `out` (at least 10 bytes). Returns the header length.
static inline size_t CLWS_frame_header(unsigned char *_Nonnull out, unsigned opcode, uint64_t length) {
    out[0] = (unsigned char)(0x80u | (opcode & 0x0fu));
    if (length < 126) {
        out[1] = (unsigned char)length;
        return 2;
    } else if (length <= 0xffff) {
        out[1] = 126;
        out[2] = (unsigned char)(length >> 8);
        out[3] = (unsigned char)length;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++) out[2 + i] = (unsigned char)(length >> (56 - 8 * i));
    return 10;
}

/// Sets glibc's malloc trim threshold (bytes of free memory at the top of an arena kept instead of returned) and
/// its mmap threshold (allocations from this size on get their own mapping). Setting either turns off glibc's
/// dynamic adjustment of both, so both are set. Returns 1 on success.
static inline int CLWS_set_malloc_thresholds(int trim_bytes, int mmap_bytes) {
    return mallopt(M_TRIM_THRESHOLD, trim_bytes) && mallopt(M_MMAP_THRESHOLD, mmap_bytes);
}

/// A one-shot timer on the lws loop (lws_sorted_usec_list): `cb(user)` runs on the service thread once the
/// scheduled time has passed. One per user (the gateway's write pacer); lws keeps a pointer to it only while it is
/// scheduled, so the caller frees it after the context is destroyed.
typedef struct CLWS_timer CLWS_timer;
CLWS_timer *_Nullable CLWS_timer_new(void (*_Nonnull cb)(void *_Nullable user), void *_Nullable user);
/// (Re)schedules the timer `us` microseconds from now (service thread).
void CLWS_timer_schedule(struct lws_context *_Nonnull ctx, CLWS_timer *_Nonnull t, int64_t us);
void CLWS_timer_free(CLWS_timer *_Nullable t);

/// Bytes waiting in the receive queue of socket `fd` (FIONREAD; ioctl is variadic), or -1.
int CLWS_socket_readable_bytes(int fd);

/// Services one more read of `fd` now, as the poll loop would for POLLIN (lws_service_fd with revents POLLIN):
/// the gateway's read budget lets a busy publisher's socket be read more than once per loop turn. Call only on
/// the service thread and never from a callback of the same wsi (the gateway calls it from the cancel pipe's
/// wake-up callback). Returns lws_service_fd's answer (nonzero: the wsi was closed).
int CLWS_service_read(struct lws_context *_Nonnull ctx, int fd);

#endif
