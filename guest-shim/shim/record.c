/*
 * record.c: encoding and checked decoding of the spawn record (record.h). No system
 * calls and no libc: shim.so uses it (home: encode; shadow: decode), and the native unit
 * test tests/t_record.c compiles it directly for the round trip and the malformed cases.
 * The decoder trusts nothing: the record comes from another VM.
 */
#include "record.h"

static uint64_t slen(const char *s)
{
    uint64_t n = 0;
    while (s[n])
        n++;
    return n;
}

static void put(char *dst, const void *src, uint64_t n)
{
    const char *s = src;
    for (uint64_t i = 0; i < n; i++)
        dst[i] = s[i];
}

static uint64_t al(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

/* layout: offsets of every part; returns the total length */
static uint64_t layout(const struct rec_view *v, struct rec_header *h, uint64_t *paths_off)
{
    uint64_t o = sizeof *h, n;
    h->exe_off = o;
    o += slen(v->exe) + 1;
    h->env_off = o;
    for (uint32_t i = 0; i < v->n_env; i++)
        o += slen(v->env[i]) + 1;
    o = al(o, 8);
    h->maps_off = o;
    o += (uint64_t)v->n_maps * sizeof(struct rec_map);
    *paths_off = o;
    for (uint32_t i = 0; i < v->n_maps; i++)
        if (v->maps[i].kind == REC_FILE)
            o += slen(v->paths[i]) + 1;
    o = al(o, 64);
    h->ctx_off = o;
    n = o + sizeof(struct rec_ctx);
    h->total_len = n;
    return n;
}

uint64_t rec_size(const struct rec_view *v)
{
    struct rec_header h;
    uint64_t p;
    return layout(v, &h, &p);
}

uint64_t rec_encode(char *buf, uint64_t cap, const struct rec_view *v)
{
    struct rec_header h = {.magic = REC_MAGIC, .version = REC_VERSION, .hdr_len = sizeof h,
                           .n_env = v->n_env, .n_maps = v->n_maps};
    uint64_t po, o, total = layout(v, &h, &po);
    if (total > cap)
        return 0;
    put(buf, &h, sizeof h);
    put(buf + h.exe_off, v->exe, slen(v->exe) + 1);
    o = h.env_off;
    for (uint32_t i = 0; i < v->n_env; i++) {
        put(buf + o, v->env[i], slen(v->env[i]) + 1);
        o += slen(v->env[i]) + 1;
    }
    for (uint32_t i = 0; i < v->n_maps; i++) {
        struct rec_map m = v->maps[i];
        m.path_off = 0;
        if (m.kind == REC_FILE) {
            m.path_off = po;
            put(buf + po, v->paths[i], slen(v->paths[i]) + 1);
            po += slen(v->paths[i]) + 1;
        }
        put(buf + h.maps_off + i * sizeof m, &m, sizeof m);
    }
    put(buf + h.ctx_off, v->ctx, sizeof *v->ctx);
    return total;
}

/* terminated: a NUL at or after off, before len; returns the index past it, 0 if none */
static uint64_t terminated(const char *buf, uint64_t len, uint64_t off)
{
    for (uint64_t i = off; i < len; i++)
        if (!buf[i])
            return i + 1;
    return 0;
}

static int in(uint64_t off, uint64_t n, uint64_t len)
{
    return off <= len && n <= len - off;
}

static int check_maps(const char *buf, uint64_t len, const struct rec_header *h)
{
    const struct rec_map *m = (const struct rec_map *)(buf + h->maps_off);
    for (uint32_t i = 0; i < h->n_maps; i++) {
        if (m[i].kind < REC_WIN || m[i].kind > REC_FILE || m[i].len == 0 ||
            (m[i].addr | m[i].len) & 4095 || m[i].addr + m[i].len < m[i].addr)
            return -22;
        if (m[i].kind == REC_FILE && (m[i].path_off >= len || !terminated(buf, len, m[i].path_off)))
            return -22;
    }
    return 0;
}

int rec_decode(const char *buf, uint64_t len, struct rec_view *v)
{
    struct rec_header h;
    uint64_t o;
    if (len < sizeof h)
        return -22;
    put((char *)&h, buf, sizeof h);
    if (h.magic != REC_MAGIC || h.version != REC_VERSION || h.hdr_len < sizeof h ||
        h.total_len > len || h.maps_off % 8 || h.ctx_off % 64 ||
        !in(h.maps_off, (uint64_t)h.n_maps * sizeof(struct rec_map), h.total_len) ||
        !in(h.ctx_off, sizeof(struct rec_ctx), h.total_len) || h.exe_off >= h.total_len ||
        h.env_off > h.total_len || !terminated(buf, h.total_len, h.exe_off))
        return -22;
    o = h.env_off;
    for (uint32_t i = 0; i < h.n_env; i++)
        if (!(o = terminated(buf, h.total_len, o)))
            return -22;
    if (check_maps(buf, h.total_len, &h))
        return -22;
    *v = (struct rec_view){.exe = buf + h.exe_off, .n_env = h.n_env,
                           .env_blob = buf + h.env_off, .n_maps = h.n_maps,
                           .maps = (const struct rec_map *)(buf + h.maps_off),
                           .ctx = (const struct rec_ctx *)(buf + h.ctx_off)};
    if (v->ctx->magic != REC_CTX_MAGIC || v->ctx->fp_size > REC_FP_MAX)
        return -22;
    return 0;
}

const char *rec_map_path(const char *buf, uint64_t len, const struct rec_map *m)
{
    if (m->kind != REC_FILE || m->path_off >= len)
        return "";
    return buf + m->path_off;
}
