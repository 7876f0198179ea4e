// See include/CLWS.h for why each symbol exists.
#ifndef _GNU_SOURCE
#error You must define _GNU_SOURCE
#endif
#include "CLWS.h"
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <stdlib.h>
#include <stddef.h>

const size_t CLWS_PRE = LWS_PRE;

void CLWS_log(int level, const char *message) { _lws_log(level, "%s\n", message); }

const uint64_t CLWS_OPTION_VALIDATE_UTF8 = LWS_SERVER_OPTION_VALIDATE_UTF8;
const uint64_t CLWS_OPTION_DO_SSL_GLOBAL_INIT = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
const uint64_t CLWS_OPTION_DISABLE_IPV6 = LWS_SERVER_OPTION_DISABLE_IPV6;
const uint64_t CLWS_OPTION_LIBEV = LWS_SERVER_OPTION_LIBEV;
const uint64_t CLWS_OPTION_EXPLICIT_VHOSTS = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
const uint64_t CLWS_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE =
    LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE;
const uint64_t CLWS_OPTION_DISABLE_OS_CA_CERTS = LWS_SERVER_OPTION_DISABLE_OS_CA_CERTS;

_Static_assert(LWS_PRE >= 10, "LWS_PRE must leave room for a WebSocket frame header");

void CLWS_ssl_ctx_tune(SSL_CTX *ctx) {
    /* Idle connections hold no record buffers (every SSL made from the context inherits the mode); no server-side
       session cache (TLS 1.3 resumption uses stateless
       tickets, which cost the server no memory): the cache would keep a session per handshake. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
}

int CLWS_accept_nonblocking(int listen_fd) { return accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

struct CLWS_timer {
    lws_sorted_usec_list_t sul; /* first member: the sul callback gets its address */
    void (*cb)(void *user);
    void *user;
};

static void clws_timer_fired(lws_sorted_usec_list_t *sul) {
    CLWS_timer *t = (CLWS_timer *)((char *)sul - offsetof(CLWS_timer, sul));
    t->cb(t->user);
}

CLWS_timer *CLWS_timer_new(void (*cb)(void *user), void *user) {
    CLWS_timer *t = calloc(1, sizeof(*t));
    if (!t) return NULL;
    t->cb = cb;
    t->user = user;
    return t;
}

void CLWS_timer_schedule(struct lws_context *ctx, CLWS_timer *t, int64_t us) {
    lws_sul_schedule(ctx, 0, &t->sul, clws_timer_fired, (lws_usec_t)(us < 1 ? 1 : us));
}

void CLWS_timer_free(CLWS_timer *t) { free(t); }

int CLWS_socket_readable_bytes(int fd) {
    int n = 0;
    return ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

int CLWS_service_read(struct lws_context *ctx, int fd) {
    struct lws_pollfd pfd;
    pfd.fd = fd;
    pfd.events = LWS_POLLIN;
    pfd.revents = LWS_POLLIN;
    return lws_service_fd(ctx, &pfd);
}
