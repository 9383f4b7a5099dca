/* XXH3-64, written for mmcache from the published XXH3 specification
 * (xxHash's doc/xxhash_spec.md): the hash the on-disk format uses for the
 * probe (xxh3_64 of the key) and the record checksum (xxh3_64 of bytes
 * [8, end) of a record), seed 0 there; any seed is supported and tested.
 * Plain portable C (no SIMD): every read is a byte-wise little-endian load,
 * so unaligned input from a mapped file is fine. Checked against the
 * `xxhash` package in tests/core/test_native.py (lengths 0..300 and beyond, seeds).
 */
#ifndef MMCACHE_XXH3_H
#define MMCACHE_XXH3_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MMX_P32_1 0x9E3779B1U
#define MMX_P32_2 0x85EBCA77U
#define MMX_P32_3 0xC2B2AE3DU
#define MMX_P64_1 0x9E3779B185EBCA87ULL
#define MMX_P64_2 0xC2B2AE3D27D4EB4FULL
#define MMX_P64_3 0x165667B19E3779F9ULL
#define MMX_P64_4 0x85EBCA77C2B2AE63ULL
#define MMX_P64_5 0x27D4EB2F165667C5ULL
#define MMX_MX1 0x165667919E3779F9ULL
#define MMX_MX2 0x9FB21C651E98DF25ULL
#define MMX_SECRET_LEN 192

/* The specification's default secret (its 192-byte constant). */
static const uint8_t mmx_secret[MMX_SECRET_LEN] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

static inline uint32_t mmx_le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t mmx_le64(const uint8_t *p) {
    return (uint64_t)mmx_le32(p) | ((uint64_t)mmx_le32(p + 4) << 32);
}

static inline void mmx_put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t mmx_rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint32_t mmx_swap32(uint32_t x) {
    return ((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >> 8) & 0xff00) | (x >> 24);
}

static inline uint64_t mmx_swap64(uint64_t x) {
    return ((uint64_t)mmx_swap32((uint32_t)x) << 32) | mmx_swap32((uint32_t)(x >> 32));
}

/* The 128-bit product of a and b, folded: low half xor high half. */
static inline uint64_t mmx_fold(uint64_t a, uint64_t b) {
    unsigned __int128 m = (unsigned __int128)a * b;
    return (uint64_t)m ^ (uint64_t)(m >> 64);
}

static inline uint64_t mmx_avalanche(uint64_t x) {
    x ^= x >> 37;
    x *= MMX_MX1;
    return x ^ (x >> 32);
}

static inline uint64_t mmx_avalanche64(uint64_t x) {
    x ^= x >> 33;
    x *= MMX_P64_2;
    x ^= x >> 29;
    x *= MMX_P64_3;
    return x ^ (x >> 32);
}

/* mixStep: 16 bytes of input against 16 bytes of secret. */
static inline uint64_t mmx_mix16(const uint8_t *in, const uint8_t *sec, uint64_t seed) {
    return mmx_fold(mmx_le64(in) ^ (mmx_le64(sec) + seed), mmx_le64(in + 8) ^ (mmx_le64(sec + 8) - seed));
}

static uint64_t mmx_short(const uint8_t *in, size_t n, uint64_t seed) {
    const uint8_t *s = mmx_secret;
    if (n == 0) return mmx_avalanche64(seed ^ mmx_le64(s + 56) ^ mmx_le64(s + 64));
    if (n <= 3) {
        uint32_t c = (uint32_t)in[n - 1] | ((uint32_t)n << 8) | ((uint32_t)in[0] << 16) |
                     ((uint32_t)in[n >> 1] << 24);
        uint64_t v = ((uint64_t)(mmx_le32(s) ^ mmx_le32(s + 4)) + seed) ^ (uint64_t)c;
        return mmx_avalanche64(v);
    }
    if (n <= 8) {
        uint32_t first = mmx_le32(in), last = mmx_le32(in + n - 4);
        uint64_t mseed = seed ^ ((uint64_t)mmx_swap32((uint32_t)seed) << 32);
        uint64_t combined = (uint64_t)last | ((uint64_t)first << 32);
        uint64_t v = ((mmx_le64(s + 8) ^ mmx_le64(s + 16)) - mseed) ^ combined;
        v ^= mmx_rotl64(v, 49) ^ mmx_rotl64(v, 24);
        v *= MMX_MX2;
        v ^= (v >> 35) + (uint64_t)n;
        v *= MMX_MX2;
        return v ^ (v >> 28);
    }
    /* 9 .. 16 */
    uint64_t lo = ((mmx_le64(s + 24) ^ mmx_le64(s + 32)) + seed) ^ mmx_le64(in);
    uint64_t hi = ((mmx_le64(s + 40) ^ mmx_le64(s + 48)) - seed) ^ mmx_le64(in + n - 8);
    uint64_t v = (uint64_t)n + mmx_swap64(lo) + hi + mmx_fold(lo, hi);
    return mmx_avalanche(v);
}

static uint64_t mmx_medium(const uint8_t *in, size_t n, uint64_t seed) {
    const uint8_t *s = mmx_secret;
    uint64_t acc = (uint64_t)n * MMX_P64_1;
    if (n <= 128) {
        size_t rounds = ((n - 1) >> 5) + 1;
        for (size_t r = rounds; r-- > 0;) {
            acc += mmx_mix16(in + r * 16, s + r * 32, seed);
            acc += mmx_mix16(in + n - r * 16 - 16, s + r * 32 + 16, seed);
        }
        return mmx_avalanche(acc);
    }
    size_t chunks = n >> 4;
    for (size_t i = 0; i < 8; i++) acc += mmx_mix16(in + i * 16, s + i * 16, seed);
    acc = mmx_avalanche(acc);
    for (size_t i = 8; i < chunks; i++) acc += mmx_mix16(in + i * 16, s + (i - 8) * 16 + 3, seed);
    acc += mmx_mix16(in + n - 16, s + 119, seed);
    return mmx_avalanche(acc);
}

/* One 64-byte stripe into the 8 accumulators: lane i takes lo32(v) * hi32(v)
 * of v = data ^ secret, and its neighbour i ^ 1 takes the data itself. */
#if defined(__SSE2__)
#include <emmintrin.h>
/* SSE2 (every x86-64): two lanes per register, the accumulators held in
 * registers (xa) for a run of stripes. _mm_mul_epu32 multiplies the low 32
 * bits of each 64-bit lane; the shuffle puts each lane's high half there;
 * swapping the two 64-bit halves of the data gives lane i ^ 1. */
static inline void mmx_stripes(uint64_t acc[8], const uint8_t *in, const uint8_t *sec, size_t n) {
    __m128i xa[4];
    for (int i = 0; i < 4; i++) xa[i] = _mm_loadu_si128((const __m128i *)(const void *)(acc + 2 * i));
    for (size_t k = 0; k < n; k++) {
        const uint8_t *stripe = in + 64 * k, *key = sec + 8 * k;
        for (int i = 0; i < 4; i++) {
            __m128i d = _mm_loadu_si128((const __m128i *)(const void *)(stripe + 16 * i));
            __m128i v = _mm_xor_si128(d, _mm_loadu_si128((const __m128i *)(const void *)(key + 16 * i)));
            __m128i prod = _mm_mul_epu32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(0, 3, 0, 1)));
            xa[i] = _mm_add_epi64(xa[i], _mm_add_epi64(prod, _mm_shuffle_epi32(d, _MM_SHUFFLE(1, 0, 3, 2))));
        }
    }
    for (int i = 0; i < 4; i++) _mm_storeu_si128((__m128i *)(void *)(acc + 2 * i), xa[i]);
}
static inline void mmx_accumulate(uint64_t acc[8], const uint8_t *stripe, const uint8_t *sec) {
    mmx_stripes(acc, stripe, sec, 1);
}
#else
static inline void mmx_accumulate(uint64_t acc[8], const uint8_t *stripe, const uint8_t *sec) {
    for (int i = 0; i < 8; i++) {
        uint64_t d = mmx_le64(stripe + 8 * i);
        uint64_t v = d ^ mmx_le64(sec + 8 * i);
        acc[i ^ 1] += d;
        acc[i] += (v & 0xFFFFFFFFULL) * (v >> 32);
    }
}
static inline void mmx_stripes(uint64_t acc[8], const uint8_t *in, const uint8_t *sec, size_t n) {
    for (size_t k = 0; k < n; k++) mmx_accumulate(acc, in + 64 * k, sec + 8 * k);
}
#endif

static uint64_t mmx_long(const uint8_t *in, size_t n, uint64_t seed) {
    uint8_t derived[MMX_SECRET_LEN];
    const uint8_t *s = mmx_secret;
    if (seed) {
        for (int i = 0; i < MMX_SECRET_LEN / 16; i++) {
            mmx_put64(derived + 16 * i, mmx_le64(mmx_secret + 16 * i) + seed);
            mmx_put64(derived + 16 * i + 8, mmx_le64(mmx_secret + 16 * i + 8) - seed);
        }
        s = derived;
    }
    uint64_t acc[8] = {MMX_P32_3, MMX_P64_1, MMX_P64_2, MMX_P64_3,
                       MMX_P64_4, MMX_P32_2, MMX_P64_5, MMX_P32_1};
    const size_t stripes_per_block = (MMX_SECRET_LEN - 64) / 8;
    const size_t block = 64 * stripes_per_block;
    size_t blocks = (n - 1) / block;
    for (size_t b = 0; b < blocks; b++) {
        const uint8_t *p = in + b * block;
        mmx_stripes(acc, p, s, stripes_per_block);
        const uint8_t *sc = s + MMX_SECRET_LEN - 64;
        for (int i = 0; i < 8; i++) {
            acc[i] ^= acc[i] >> 47;
            acc[i] ^= mmx_le64(sc + 8 * i);
            acc[i] *= MMX_P32_1;
        }
    }
    size_t last = n - blocks * block; /* 1 .. block */
    size_t full = (last - 1) / 64;
    mmx_stripes(acc, in + blocks * block, s, full);
    mmx_accumulate(acc, in + n - 64, s + MMX_SECRET_LEN - 71);
    uint64_t r = (uint64_t)n * MMX_P64_1;
    for (int i = 0; i < 4; i++)
        r += mmx_fold(acc[2 * i] ^ mmx_le64(s + 11 + 16 * i), acc[2 * i + 1] ^ mmx_le64(s + 19 + 16 * i));
    return mmx_avalanche(r);
}

static inline uint64_t mmx_xxh3_64(const void *data, size_t n, uint64_t seed) {
    const uint8_t *in = (const uint8_t *)data;
    if (n <= 16) return mmx_short(in, n, seed);
    if (n <= 240) return mmx_medium(in, n, seed);
    return mmx_long(in, n, seed);
}

/* XXH3-128 of 17 .. 240 bytes (the decorator's keys; other lengths go to the
 * xxhash package), from the same specification: two 64-bit accumulators fed
 * 32 bytes at a time, then finished as the 64-bit one is. */
typedef struct { uint64_t lo, hi; } mmx_u128;

static inline mmx_u128 mmx_mix32(mmx_u128 acc, const uint8_t *a, const uint8_t *b, const uint8_t *sec, uint64_t seed) {
    acc.lo += mmx_mix16(a, sec, seed);
    acc.lo ^= mmx_le64(b) + mmx_le64(b + 8);
    acc.hi += mmx_mix16(b, sec + 16, seed);
    acc.hi ^= mmx_le64(a) + mmx_le64(a + 8);
    return acc;
}

static inline mmx_u128 mmx_128_finish(mmx_u128 acc, size_t n, uint64_t seed) {
    mmx_u128 h;
    h.lo = acc.lo + acc.hi;
    h.hi = acc.lo * MMX_P64_1 + acc.hi * MMX_P64_4 + ((uint64_t)n - seed) * MMX_P64_2;
    h.lo = mmx_avalanche(h.lo);
    h.hi = 0 - mmx_avalanche(h.hi);
    return h;
}

static mmx_u128 mmx_xxh3_128_mid(const uint8_t *in, size_t n, uint64_t seed) {
    const uint8_t *s = mmx_secret;
    mmx_u128 acc = {(uint64_t)n * MMX_P64_1, 0};
    if (n <= 128) {
        if (n > 32) {
            if (n > 64) {
                if (n > 96) acc = mmx_mix32(acc, in + 48, in + n - 64, s + 96, seed);
                acc = mmx_mix32(acc, in + 32, in + n - 48, s + 64, seed);
            }
            acc = mmx_mix32(acc, in + 16, in + n - 32, s + 32, seed);
        }
        acc = mmx_mix32(acc, in, in + n - 16, s, seed);
        return mmx_128_finish(acc, n, seed);
    }
    size_t rounds = n / 32;
    for (size_t i = 0; i < 4; i++) acc = mmx_mix32(acc, in + 32 * i, in + 32 * i + 16, s + 32 * i, seed);
    acc.lo = mmx_avalanche(acc.lo);
    acc.hi = mmx_avalanche(acc.hi);
    for (size_t i = 4; i < rounds; i++)
        acc = mmx_mix32(acc, in + 32 * i, in + 32 * i + 16, s + 3 + 32 * (i - 4), seed);
    acc = mmx_mix32(acc, in + n - 16, in + n - 32, s + 136 - 17 - 16, 0 - seed);
    return mmx_128_finish(acc, n, seed);
}

#endif
