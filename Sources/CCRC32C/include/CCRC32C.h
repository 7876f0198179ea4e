// CCRC32C: CRC32C (Castagnoli) with the CPU's crc32 instruction (x86-64 SSE4.2), for TranscriptLog.
// Swift cannot emit the instruction itself; TranscriptLog's portable slicing-by-8 is used where this
// reports no hardware support.
#ifndef CCRC32C_H
#define CCRC32C_H

#include <stddef.h>
#include <stdint.h>

/// 1 when ccrc32c_hw_update may be called on this CPU, else 0.
int ccrc32c_hw_available(void);

/// Folds `count` bytes at `bytes` into the running (pre-inverted) CRC state `state` and returns the new state.
/// The caller inverts before the first and after the last call. Only valid when ccrc32c_hw_available() is 1.
uint32_t ccrc32c_hw_update(uint32_t state, const void *_Nullable bytes, size_t count);

#endif
