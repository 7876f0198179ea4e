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
