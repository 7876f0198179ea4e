// C shim for gateway-loadtest: what Swift's Glibc module does not show.
// - <sys/epoll.h> and <sys/timerfd.h> are not part of the Glibc module map, so epoll_create1/epoll_ctl/epoll_wait,
//   timerfd_create/timerfd_settime and
//   struct epoll_event are imported from here.
// - memmem needs _GNU_SOURCE, which the Glibc module is not built with.
// - the client-frame mask (RFC 6455 5.3) is a byte loop that the C compiler vectorises.
#ifndef CLOADTEST_H
#define CLOADTEST_H
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/timerfd.h>

/// memmem(3): first occurrence of needle in haystack, or NULL.
const void *_Nullable clt_memmem(const void *_Nonnull haystack, size_t haystack_len, const void *_Nonnull needle,
                                 size_t needle_len);

/// Copies len bytes from src to dst XOR-ing them with the 4-byte masking key (key byte 0 first in memory).
void clt_mask_copy(uint8_t *_Nonnull dst, const uint8_t *_Nonnull src, size_t len, uint32_t key);

#endif
