/* mmcache/_native/format.h: the table's bytes for the compiled paths.
 *
 * The layout constants of mmcache/_core/layout.py (docs/FORMAT.md in prose)
 * and bounds-checked readers of slots and records, shared by the compiled
 * get (_speedups.c) and the compiled writes. tests/test_native.py checks
 * every MMF_ constant against layout.py.
 *
 * Files are untrusted: every reader here takes the length of the map it
 * reads and checks each offset and length against it before use, in 64-bit
 * arithmetic that cannot overflow (the fields are u32, maps < 2^63 bytes).
 * A reader that returns NULL / 0 means "not usable here": the caller falls
 * back to the pure-Python path, which decides (repair, remap, miss).
 */
#ifndef MMCACHE_FORMAT_H
#define MMCACHE_FORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "xxh3.h"

/* ---------------------------------------------------------------- index */
#define MMF_HEADER_BYTES 4096 /* the index header; slot 1 starts here */
#define MMF_OFF_FLAGS 12      /* u32; its first byte's bit 0: RETIRED */
#define MMF_FLAG_RETIRED 1
#define MMF_OFF_COUNTERS 48 /* u64 occupied, deleted, high_water_mark */
#define MMF_OFF_HEAP_SEG 72 /* u32 current heap segment */
#define MMF_OFF_DIRTY 76    /* u32: 1 while a writer mutates */
#define MMF_OFF_HEAP_TAIL 80
#define MMF_OFF_BYTES 88 /* u64 live_bytes, dead_bytes */
#define MMF_OFF_WRITE_SEQ 112
#define MMF_OFF_LOGGING 13 /* the flags byte holding FLAG_LOGGING (1 << 8) */
#define MMF_OFF_LOG 256    /* u32 count, pad, then u32 slot numbers */
#define MMF_OFF_LOG_ENTRIES 264
#define MMF_LOG_CAP ((MMF_HEADER_BYTES - MMF_OFF_LOG_ENTRIES) / 4)

/* ---------------------------------------------------------------- slots
 * key_size bytes of key, then SLOT_FIXED bytes; offsets from the key's end. */
#define MMF_SLOT_FIXED 32
#define MMF_SLOT_STATE 0  /* u8: EMPTY, OCCUPIED, DELETED */
#define MMF_SLOT_KFLAGS 1 /* u8 */
#define MMF_SLOT_KLEN 2   /* u8 */
#define MMF_SLOT_ROSTER 4 /* u32 roster position */
#define MMF_SLOT_SEG 8    /* u32 heap segment */
#define MMF_SLOT_OFF 12   /* u32 heap offset of the record */
#define MMF_SLOT_MTIME 16 /* u64 CLOCK_REALTIME ns of the put */
#define MMF_SLOT_RECLEN 24
#define MMF_EMPTY 0
#define MMF_OCCUPIED 1
#define MMF_DELETED 2
#define MMF_KF_HASHED 1
#define MMF_KF_STR 2
#define MMF_KF_SIGNED 4
#define MMF_MIN_KEY_SIZE 16
#define MMF_MAX_KEY_SIZE 255
#define MMF_MAX_SLOT_SIZE 65536

/* --------------------------------------------------------------- roster */
#define MMF_ROSTER_HEADER_BYTES 64

/* ----------------------------------------------------------------- heap */
#define MMF_SEG_HEADER_BYTES 64
#define MMF_RECORD_HEADER 32
#define MMF_REC_CSUM 0    /* u64 xxh3_64 of bytes [8, end) */
#define MMF_REC_EXPIRE 8  /* u64 CLOCK_REALTIME ns, 0: never */
#define MMF_REC_KLEN 16   /* u32 */
#define MMF_REC_VLEN 20   /* u32 */
#define MMF_REC_FLAGS 24  /* u16 the caller's tag */
#define MMF_REC_KFLAGS 26 /* u8 */
#define MMF_REC_MAGIC_AT 27
#define MMF_REC_MAGIC 0xA7
#define MMF_REC_MAC_BYTES 16 /* a signed record's MAC, after its value */

/* The geometry of one index map, checked once (mmf_geometry_ok) and then
 * trusted by mmf_slot: the whole slot array lies inside the map. */
typedef struct {
    const uint8_t *idx;
    uint64_t len;     /* bytes mapped */
    uint64_t nslots;  /* data slots (size - 1) */
    uint64_t ss;      /* slot size */
    uint64_t ks;      /* key size */
} mmf_index;

/* Is the slot array of `ix` inside its map, with sane sizes? (nslots <=
 * 2^32, ss <= 2^16: the product cannot overflow.) */
static inline int mmf_geometry_ok(const mmf_index *ix) {
    return ix->idx != NULL && ix->nslots >= 1 && ix->nslots <= 0xFFFFFFFFULL &&
           ix->ks >= MMF_MIN_KEY_SIZE && ix->ks <= MMF_MAX_KEY_SIZE &&
           ix->ss >= ix->ks + MMF_SLOT_FIXED && ix->ss <= MMF_MAX_SLOT_SIZE && ix->len >= MMF_HEADER_BYTES &&
           ix->len - MMF_HEADER_BYTES >= ix->nslots * ix->ss;
}

/* Slot i (0-based: the table's slot i + 1) of a geometry mmf_geometry_ok
 * accepted; NULL past the end. */
static inline const uint8_t *mmf_slot(const mmf_index *ix, uint64_t i) {
    return i < ix->nslots ? ix->idx + MMF_HEADER_BYTES + i * ix->ss : NULL;
}

/* Are the n bytes at p all zero (a slot key's padding)? Word at a time. */
static inline int mmf_all_zero(const uint8_t *p, size_t n) {
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        acc |= w;
    }
    for (; i < n; i++) acc |= p[i];
    return acc == 0;
}

/* A record's header fields, read by mmf_read_record. */
typedef struct {
    uint64_t csum, expire;
    uint64_t klen, vlen;
    uint64_t key_at, value_at, end; /* offsets into the segment map */
    unsigned flags, kflags;
} mmf_record;

/* Read the record at `off` of a segment map of `hlen` bytes: 1 if its
 * header and its key and value lie inside the map and its magic is right,
 * else 0 (a racing writer, damage, or a map shorter than the record: the
 * pure path remaps and decides). The checksum is not checked here. */
static inline int mmf_read_record(const uint8_t *heap, uint64_t hlen, uint64_t off, mmf_record *r) {
    if (off > hlen || hlen - off < MMF_RECORD_HEADER) return 0;
    const uint8_t *p = heap + off;
    if (p[MMF_REC_MAGIC_AT] != MMF_REC_MAGIC) return 0;
    r->csum = mmx_le64(p + MMF_REC_CSUM);
    r->expire = mmx_le64(p + MMF_REC_EXPIRE);
    r->klen = mmx_le32(p + MMF_REC_KLEN);
    r->vlen = mmx_le32(p + MMF_REC_VLEN);
    r->flags = (unsigned)p[MMF_REC_FLAGS] | ((unsigned)p[MMF_REC_FLAGS + 1] << 8);
    r->kflags = p[MMF_REC_KFLAGS];
    r->key_at = off + MMF_RECORD_HEADER;
    r->value_at = r->key_at + r->klen;
    r->end = r->value_at + r->vlen; /* < 2^35 for u32 fields and off <= hlen: no overflow */
    return r->end <= hlen;
}

/* Does the checksum of a record mmf_read_record accepted match its bytes? */
static inline int mmf_checksum_ok(const uint8_t *heap, uint64_t off, const mmf_record *r) {
    return mmx_xxh3_64(heap + off + 8, (size_t)(r->end - off - 8), 0) == r->csum;
}

/* The roster's u64 index of slot i's (0-based) recency stamp, given
 * rec_base (layout.recency_index(size, 1)). */
static inline uint64_t mmf_stamp_index(uint64_t rec_base, uint64_t i) { return rec_base + i; }

#endif
