#ifndef FUZZ_DRIVER_H
#define FUZZ_DRIVER_H
#include <stddef.h>
#include <stdint.h>

/// libFuzzer's entry point for programs with their own `main` (compiler-rt FuzzerInterface.h).
/// Built with -sanitize=fuzzer it is libFuzzer's; otherwise the weak stand-in in driver.c runs each file (or each
/// file in each directory) named on the command line once: a plain regression runner.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

/// Calls LLVMFuzzerRunDriver with `main`'s arguments.
int fuzz_driver_main(int argc, char **argv, int (*callback)(const uint8_t *data, size_t size));

#endif
