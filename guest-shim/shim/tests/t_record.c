/* t_record.c: unit test of the spawn record (record.c, compiled in directly): encode and
 * decode round trip, and the decoder's refusal of truncated or corrupted records. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../record.h"

int main(void)
{
    const char *env[] = {"A=1", "PATH=/bin", "EMPTY="};
    struct rec_map maps[3] = {
        {.addr = 0x555555558000, .len = 0x1000, .off = 0x2000, .prot = 3, .kind = REC_WIN},
        {.addr = 0x7ffff0000000, .len = 0x4000, .prot = 0, .kind = REC_PENDING},
        {.addr = 0x555555554000, .len = 0x1000, .off = 0, .prot = 1, .kind = REC_FILE, .inode = 42},
    };
    const char *paths[3] = {0, 0, "/bin/prog"};
    static struct rec_ctx ctx = {.magic = REC_CTX_MAGIC, .fs_base = 0x1234, .fp_size = 512};
    struct rec_view v = {.exe = "/bin/prog", .n_env = 3, .env = env, .n_maps = 3,
                         .maps = maps, .paths = paths, .ctx = &ctx}, d;
    uint64_t n = rec_size(&v);
    char *buf = calloc(1, n);
    int fails = 0;
    ctx.gregs[16] = 0xdeadbeef;
    fails += rec_encode(buf, n - 1, &v) != 0;
    fails += rec_encode(buf, n, &v) != n;
    fails += rec_decode(buf, n, &d) != 0;
    fails += strcmp(d.exe, "/bin/prog") || d.n_env != 3 || strcmp(d.env_blob, "A=1") ||
             strcmp(d.env_blob + 4, "PATH=/bin") || d.n_maps != 3 ||
             memcmp(&d.maps[0], &maps[0], 24) || d.maps[2].inode != 42 ||
             strcmp(rec_map_path(buf, n, &d.maps[2]), "/bin/prog") ||
             d.ctx->fs_base != 0x1234 || d.ctx->gregs[16] != 0xdeadbeef;
    fails += rec_decode(buf, n - 8, &d) == 0;       /* truncated */
    buf[0] ^= 1;
    fails += rec_decode(buf, n, &d) == 0;           /* bad magic */
    buf[0] ^= 1;
    ((struct rec_map *)(buf + ((struct rec_header *)buf)->maps_off))[0].addr |= 1;
    fails += rec_decode(buf, n, &d) == 0;           /* unaligned map */
    printf("record: %s (%llu bytes)\n", fails ? "FAIL" : "ok", (unsigned long long)n);
    return fails != 0;
}
