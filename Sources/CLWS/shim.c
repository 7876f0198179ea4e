// See include/CLWS.h for why each symbol exists.
#ifndef _GNU_SOURCE
#error You must define _GNU_SOURCE
#endif
#include "CLWS.h"
#include <sys/socket.h>

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
