/* The write side's shared parts (_wstate.c, _write.c, _delete.c): the
 * layout it writes, the Putter object, the state a call reads from Python
 * objects, and the steps both the put and the delete take (the lock, the
 * header, the probe). Internal to the extension. */
#ifndef MMCACHE_WRITE_INT_H
#define MMCACHE_WRITE_INT_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <time.h>

#include "_write.h"

/* The layout (mmcache/_core/layout.py, docs/FORMAT.md). */
#define HB 4096u            /* index header page */
#define OFF_FLAGS 12        /* u8 RETIRED (and any other bit of the first flags byte) */
#define OFF_LOGGING 13      /* u8 FLAG_LOGGING >> 8: a concurrent rebuild copies */
#define OFF_HOT 48          /* occupied, deleted, hwm, heap_seg, dirty, tail, live, dead, created, seq */
#define OFF_DIRTY 76
#define RH 32               /* record header */
#define SEG_HB 64           /* heap segment header */
#define ROSTER_HB 64
#define SLOT_FIXED 32
#define REC_MAGIC 0xA7
#define ST_EMPTY 0
#define ST_OCCUPIED 1
#define ST_DELETED 2
#define KF_STR 2
#define I_SETS 2            /* layout.SETS in SharedTable.local */
#define I_DELETES 3         /* layout.DELETES */
#define NUM_LIMIT (1ULL << 62) /* generation.NUM_LIMIT: byte counts and the write sequence */
#define SEG_LIMIT (1ULL << 20) /* heap segment numbers (generation.counters_sane) */
#define NEVER_NS (1ULL << 63)  /* args.NEVER_NS: an expiry from here on is "never" */
#define FAR_S (9223372036854775808.0 / 1e9)
/* capacity.EARLY_FRACTION = (LIVE_FRACTION + LOAD_FRACTION) / 2; the 0.9 of
 * rebuild_wanted (tests/core/test_native_put.py checks both against capacity.py) */
#define EARLY_FRACTION ((0.5 + 0.85) / 2)
#define GROW_AT 0.9

extern PyObject *S_s, *S_opts, *S_gen, *S_hot, *S_heap, *S_views, *S_max_seg, *S_needs_repair, *S_caps,
    *S_roster, *S_next_check, *S_flush_due, *S_local, *S_lock, *S_tlock, *S_depth, *S_fd, *S_acquire,
    *S_release, *S_compact_wanted, *S_grow_to, *S_compact, *S_put_pure, *S_add_pure, *S_delete_pure, *S_flags, *S_expire,
    *S_key_size, *S_max_bytes, *S_secret, *S_max_entries, *S_max_size, *S_threshold, *S_min_bytes;

static inline void put16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
/* Stores before it are visible before stores after it (to other processes'
 * lock-free readers, and to a repair after a kill -9: the order of _publish). */
static inline void publish_fence(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }

static inline uint64_t clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ Putter */
typedef struct {
    PyObject_HEAD
    PyObject *handle;
    PyObject *opts; /* the handle's Options last decoded (frozen: replaced, never changed) */
    uint64_t max_entries, max_size, min_bytes; /* UINT64_MAX / 0 / -: None */
    double threshold;
    int opts_ok; /* no max_bytes, no secret: the native put may answer */
    int only_if_absent; /* an add: stores only if the key has no live entry */
    long key_size;
    unsigned long long answered, passed; /* puts done here / handed to the pure path */
    vectorcallfunc vectorcall;
} Putter;

/* What the put needs from Python objects, read before the lock is taken. */
typedef struct {
    PyObject *s, *local, *hot, *views, *roster, *lock, *tlock;
    uint64_t nslots, ss, rec_base, max_seg, cap, load, next_check, flush_due;
    int fd;
} State;

/* A put's arguments, checked. */
typedef struct {
    const uint8_t *kb, *vp;
    uint64_t n, vlen, exp, rec_len;
    unsigned kf, flags;
} Put;

/* The header's hot fields (layout.HOT). */
typedef struct {
    uint64_t occ, dele, hwm, seg, tail, live, dead, created, seq;
    int logging; /* a concurrent rebuild copies: every changed slot goes in the header's log */
} Hot;

int w_intern(void); /* the S_ names above; -1 with an exception */
void state_clear(State *st);
int load_state(Putter *p, State *st, int for_put);
long take_lock(State *st);
int drop_lock(State *st, long depth);
int read_hot(const uint8_t *idx, const State *st, Hot *h);
void log_change(uint8_t *idx, uint64_t slot);
void find_slot(const uint8_t *idx, const State *st, uint64_t K, const Put *a, uint64_t *found, uint64_t *free);
int check_key(const Putter *p, PyObject *key, Put *a);
int record_live(const State *st, const uint8_t *sp, uint64_t K);
PyObject *deleter_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);

#endif
