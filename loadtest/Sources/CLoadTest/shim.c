#ifndef _GNU_SOURCE
#error You must define _GNU_SOURCE (Package.swift cSettings)
#endif
#include "CLoadTest.h"
#include <string.h>

const void *clt_memmem(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len)
{
	return memmem(haystack, haystack_len, needle, needle_len);
}

void clt_mask_copy(uint8_t *dst, const uint8_t *src, size_t len, uint32_t key)
{
	uint64_t k8 = (uint64_t)key | ((uint64_t)key << 32);
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t v;
		memcpy(&v, src + i, 8);
		v ^= k8;
		memcpy(dst + i, &v, 8);
	}
	for (; i < len; i++)
		dst[i] = src[i] ^ (uint8_t)(key >> (8 * (i & 3)));
}

// MARK: - TLS client (see CLoadTest.h). One event loop per process, no threads: one static error buffer.

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

static char clt_tls_err[256] = "";

static void clt_tls_note_error(const char *what)
{
	unsigned long e = ERR_get_error();
	if (e != 0) {
		char s[200];
		ERR_error_string_n(e, s, sizeof s);
		snprintf(clt_tls_err, sizeof clt_tls_err, "%s: %s", what, s);
	} else {
		snprintf(clt_tls_err, sizeof clt_tls_err, "%s: %s", what, errno ? strerror(errno) : "unknown error");
	}
	ERR_clear_error();
}

/// Maps SSL_get_error after a call that returned r <= 0.
static int clt_tls_result(SSL *ssl, int r, const char *what)
{
	switch (SSL_get_error(ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return CLT_TLS_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return CLT_TLS_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:
	case SSL_ERROR_SYSCALL:
		ERR_clear_error();
		return CLT_TLS_CLOSED;
	default:
		clt_tls_note_error(what);
		return CLT_TLS_FAILED;
	}
}

struct ssl_ctx_st *clt_tls_ctx_new(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		clt_tls_note_error("SSL_CTX_new");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	// Loopback benchmarking against a self-signed development certificate: no verification.
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);  // EOF without close_notify: a close, like recv() == 0
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				      SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_read_ahead(ctx, 1);
	return ctx;
}

struct ssl_st *clt_tls_new(struct ssl_ctx_st *ctx, int fd)
{
	SSL *ssl = SSL_new(ctx);
	if (ssl == NULL) {
		clt_tls_note_error("SSL_new");
		return NULL;
	}
	if (SSL_set_fd(ssl, fd) != 1) {
		clt_tls_note_error("SSL_set_fd");
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_connect_state(ssl);
	return ssl;
}

int clt_tls_handshake(struct ssl_st *ssl)
{
	ERR_clear_error();
	int r = SSL_do_handshake(ssl);
	return r == 1 ? 1 : clt_tls_result(ssl, r, "handshake");
}

ssize_t clt_tls_read(struct ssl_st *ssl, void *buf, size_t len)
{
	ERR_clear_error();
	int r = SSL_read(ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
	return r > 0 ? r : clt_tls_result(ssl, r, "read");
}

ssize_t clt_tls_write(struct ssl_st *ssl, const void *buf, size_t len)
{
	ERR_clear_error();
	int r = SSL_write(ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
	return r > 0 ? r : clt_tls_result(ssl, r, "write");
}

void clt_tls_free(struct ssl_st *ssl, int notify)
{
	if (notify && SSL_is_init_finished(ssl))
		(void)SSL_shutdown(ssl);
	SSL_free(ssl);
	ERR_clear_error();
}

void clt_tls_describe(struct ssl_st *ssl, char *buf, size_t len)
{
	snprintf(buf, len, "%s %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
}

const char *clt_tls_last_error(void)
{
	return clt_tls_err;
}
