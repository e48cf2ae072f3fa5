/*
 * record.h: the spawn record (docs/offload-threads.md, "The spawn record"): what a home
 * shim writes into window pages for `offload shadow` and the shadow's shim. Little endian
 * (x86_64 only). The header and the exe/env parts are fixed by the spec (the CLI reads
 * them); maps and ctx are the shim's own:
 *  - maps: n_maps struct rec_map, then their paths (NUL-terminated, at path_off from the
 *    record's start): WIN entries (window runs: the shadow maps them at addr), PENDING
 *    (private anonymous reservations, not writable yet: the shadow reserves them), FILE
 *    (file mappings the shadow must already have at the same place: checked, not mapped);
 *  - ctx: the migrating thread's user context at its migrate trap.
 * Pure C, no system calls: record.c is also compiled into the native unit test.
 */
#ifndef OFFLOAD_SHIM_RECORD_H
#define OFFLOAD_SHIM_RECORD_H

#include <stdint.h>

#define REC_MAGIC 0x5053464fU /* "OFSP" */
#define REC_VERSION 1

struct rec_header {
    uint32_t magic, version, hdr_len, n_env;
    uint64_t total_len, exe_off, env_off, maps_off;
    uint32_t n_maps, reserved;
    uint64_t ctx_off;
};

enum { REC_WIN = 1, REC_PENDING = 2, REC_FILE = 3 };

struct rec_map {
    uint64_t addr, len;
    uint64_t off;      /* WIN: window offset; FILE: file offset */
    uint32_t prot, kind;
    uint64_t path_off; /* FILE: offset of the path from the record's start; else 0 */
    uint64_t inode;    /* FILE: as /proc/self/maps says */
};

#define REC_CTX_MAGIC 0x5854434f46464fULL /* "OFFOCTX" */
#define REC_FP_MAX 4096

/* The thread's context: general registers in glibc's REG_* order (ucontext gregs),
 * FS base, the signal mask, and the FPU state as the kernel wrote it in the signal frame
 * (fxsave image, extended by the xsave area when fp_size > 512). */
struct rec_ctx {
    uint64_t magic;
    uint64_t gregs[23];
    uint64_t fs_base;
    uint64_t sigmask;
    uint64_t brk_lo, brk_hi, brk_cur; /* the emulated break (memcalls.c) */
    uint32_t fp_size, reserved;
    uint8_t fp[REC_FP_MAX] __attribute__((aligned(64)));
};

/* What an encoder is given (and a decoder gives back, pointing into the record). */
struct rec_view {
    const char *exe;
    uint32_t n_env;
    const char *const *env;  /* encoder only: the strings */
    const char *env_blob;    /* decoder only: n_env strings back to back */
    uint32_t n_maps;
    const struct rec_map *maps;
    const char *const *paths; /* encoder only: path of maps[i] (FILE), else unused */
    const struct rec_ctx *ctx;
};

/* rec_size: bytes rec_encode needs for v. */
uint64_t rec_size(const struct rec_view *v) __attribute__((visibility("hidden")));
/* rec_encode: writes the record into buf (cap bytes, zeroed by the caller); its length,
 * or 0 if cap is too small. */
uint64_t rec_encode(char *buf, uint64_t cap, const struct rec_view *v)
    __attribute__((visibility("hidden")));
/* rec_decode: checks every offset and length against len; 0 and *v filled, or -22. */
int rec_decode(const char *buf, uint64_t len, struct rec_view *v)
    __attribute__((visibility("hidden")));
/* rec_map_path: the path of a FILE entry of a decoded record ("" if none). */
const char *rec_map_path(const char *buf, uint64_t len, const struct rec_map *m)
    __attribute__((visibility("hidden")));

#endif
