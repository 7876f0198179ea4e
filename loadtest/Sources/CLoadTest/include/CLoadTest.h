// C shim for gateway-loadtest: what Swift's Glibc module does not show.
// - <sys/epoll.h> and <sys/timerfd.h> are not part of the Glibc module map, so epoll_create1/epoll_ctl/epoll_wait,
//   timerfd_create/timerfd_settime and
//   struct epoll_event are imported from here.
// - memmem needs _GNU_SOURCE, which the Glibc module is not built with.
// - the client-frame mask (RFC 6455 5.3) is a byte loop that the C compiler vectorises.
// - wss: a few non-blocking OpenSSL client calls (clt_tls_*), each mapping SSL_get_error to one of the CLT_TLS_*
//   codes, so that the Swift engine drives handshake, reads and writes from its epoll loop without OpenSSL's macros.
#ifndef CLOADTEST_H
#define CLOADTEST_H
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <sys/types.h>

/// memmem(3): first occurrence of needle in haystack, or NULL.
const void *_Nullable clt_memmem(const void *_Nonnull haystack, size_t haystack_len, const void *_Nonnull needle,
                                 size_t needle_len);

/// Copies len bytes from src to dst XOR-ing them with the 4-byte masking key (key byte 0 first in memory).
void clt_mask_copy(uint8_t *_Nonnull dst, const uint8_t *_Nonnull src, size_t len, uint32_t key);

// MARK: - TLS client (OpenSSL's SSL_CTX and SSL, opaque to Swift)

struct ssl_ctx_st;
struct ssl_st;

/// Results of clt_tls_handshake/read/write besides "done" (1) and a byte count (> 0).
enum {
    /// The peer closed (close_notify or EOF) or the socket failed: like recv() == 0 or send() < 0.
    CLT_TLS_CLOSED = -1,
    /// Call again when the socket is readable (EPOLLIN).
    CLT_TLS_WANT_READ = -2,
    /// Call again when the socket is writable (EPOLLOUT); a write must be retried with the same bytes.
    CLT_TLS_WANT_WRITE = -3,
    /// A TLS protocol error: clt_tls_last_error() says what.
    CLT_TLS_FAILED = -4,
};

/// A client context: TLS 1.2 or 1.3, certificate verification OFF (the tool talks to 127.0.0.1 only, to a gateway
/// with a self-signed development certificate), no session resumption (every connection a full handshake), partial
/// writes with a movable write buffer, read-ahead, buffers released while idle. NULL on failure.
struct ssl_ctx_st *_Nullable clt_tls_ctx_new(void);

/// A client connection on the connected non-blocking socket fd. NULL on failure.
struct ssl_st *_Nullable clt_tls_new(struct ssl_ctx_st *_Nonnull ctx, int fd);

/// One step of the handshake: 1 when done, else CLT_TLS_WANT_READ / _WANT_WRITE / _CLOSED / _FAILED.
int clt_tls_handshake(struct ssl_st *_Nonnull ssl);

/// SSL_read: bytes read (> 0), else CLT_TLS_WANT_READ / _WANT_WRITE / _CLOSED / _FAILED. Read until WANT_READ:
/// with read-ahead, decrypted or raw bytes can wait inside OpenSSL where epoll does not see them.
ssize_t clt_tls_read(struct ssl_st *_Nonnull ssl, void *_Nonnull buf, size_t len);

/// SSL_write (partial writes on): bytes written (> 0), else CLT_TLS_WANT_READ / _WANT_WRITE / _CLOSED / _FAILED.
/// After a WANT_*, call again with the same unsent bytes first (the buffer may move and may have grown).
ssize_t clt_tls_write(struct ssl_st *_Nonnull ssl, const void *_Nonnull buf, size_t len);

/// Frees the connection; with notify, first tries once (non-blocking) to send close_notify. Does not close fd.
void clt_tls_free(struct ssl_st *_Nonnull ssl, int notify);

/// "TLSv1.3 TLS_AES_256_GCM_SHA384": the negotiated version and cipher (valid while ssl lives).
void clt_tls_describe(struct ssl_st *_Nonnull ssl, char *_Nonnull buf, size_t len);

/// The last CLT_TLS_FAILED (or failed clt_tls_ctx_new/clt_tls_new) reason: OpenSSL's error string.
const char *_Nonnull clt_tls_last_error(void);

#endif
