#include "FuzzDriver.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int run_file(const char *path, int (*callback)(const uint8_t *, size_t)) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return 1; }
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) { cap *= 2; buf = realloc(buf, cap); }
    }
    fclose(f);
    if (!buf) return 1;
    callback(buf, len);
    free(buf);
    return 0;
}

/// Without libFuzzer: replay the inputs named on the command line (files or directories); flags are ignored.
__attribute__((weak)) int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *, size_t)) {
    int runs = 0;
    for (int i = 1; i < *argc; i++) {
        const char *arg = (*argv)[i];
        if (arg[0] == '-') continue;
        struct stat st;
        if (stat(arg, &st) != 0) { perror(arg); return 1; }
        if (S_ISDIR(st.st_mode)) {
            DIR *d = opendir(arg);
            if (!d) { perror(arg); return 1; }
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (e->d_name[0] == '.') continue;
                char path[4096];
                snprintf(path, sizeof path, "%s/%s", arg, e->d_name);
                if (run_file(path, callback) != 0) { closedir(d); return 1; }
                runs++;
            }
            closedir(d);
        } else {
            if (run_file(arg, callback) != 0) return 1;
            runs++;
        }
    }
    fprintf(stderr, "replayed %d inputs without libFuzzer (build with -sanitize=fuzzer to fuzz)\n", runs);
    return 0;
}

int fuzz_driver_main(int argc, char **argv, int (*callback)(const uint8_t *, size_t)) {
    return LLVMFuzzerRunDriver(&argc, &argv, callback);
}
