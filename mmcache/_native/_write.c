/* mmcache._native._speedups, the write side: Putter, MmapCache.put and
 * MmapCache.delete in C.
 *
 * A Putter is what MmapCache installs as a handle's `put`, and with
 * delete=True as its `delete` (no secret, a writable table; see
 * TableWrites._native_writes). One call does the whole common put: the
 * writer lock (its thread lock and its flock, taken without waiting), the
 * probe, the record appended to the heap, the slot, roster and header
 * updated, the lock let go. It mirrors the pure path, which is the reference
 * (mmcache/_core/table_writes.py put, writer.write and writer._publish): the
 * same bytes, stored in the same order, under the same dirty-flag protocol,
 * so that a writer killed at any instruction leaves what the pure path
 * leaves, and native and pure processes write one table at the same time.
 *
 * It answers only the common case: an overwrite, or a new key in a table
 * with room to spare. For anything else it decides BEFORE changing anything
 * to hand the call, arguments as given, to the pure path (handle._put_pure):
 * a lock held elsewhere (the pure path waits for it without freezing other
 * threads: it lets the GIL go while it blocks), a staleness check or a stats
 * flush due, a retired, dirty or logging index, needs_repair, a number of
 * the header out of its range, a byte cap, a key that needs eviction or a
 * rebuild first, a heap segment without room (the pure path grows or rolls
 * it), a key longer than key_size (hashed), a key, value, expiry or flags
 * of a type or range it does not handle. The delete (further down) is
 * writer.delete's common case, with its own list of what it hands on.
 * Files are untrusted: every offset
 * and length read from a map is checked against that map's size before use.
 *
 * The GIL is held throughout (the lock is taken without waiting); every
 * buffer written is exported (pinned) while it is written. Stores that a
 * lock-free reader or a later repair depends on are ordered with release
 * fences (a compiler barrier on x86, a real fence where stores may pass). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <sys/file.h>
#include <time.h>

#include "_write.h"
#include "xxh3.h"

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
 * rebuild_wanted (tests/test_native_put.py checks both against capacity.py) */
#define EARLY_FRACTION ((0.5 + 0.85) / 2)
#define GROW_AT 0.9

static PyObject *S_s, *S_opts, *S_gen, *S_hot, *S_heap, *S_views, *S_max_seg, *S_needs_repair, *S_caps,
    *S_roster, *S_next_check, *S_flush_due, *S_local, *S_lock, *S_tlock, *S_depth, *S_fd, *S_acquire,
    *S_release, *S_compact_wanted, *S_grow_to, *S_compact, *S_put_pure, *S_delete_pure, *S_flags, *S_expire, *S_key_size,
    *S_max_bytes, *S_secret, *S_max_entries, *S_max_size, *S_threshold, *S_min_bytes;

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

/* capacity.rebuild_wanted, in the same float arithmetic: 1 if a concurrent
 * rebuild should be asked for, with *grow_to the size to grow to (0: none). */
static int want_rebuild(uint64_t occ, uint64_t dele, uint64_t live, uint64_t dead, uint64_t nslots,
                        uint64_t index_bytes, uint64_t size, uint64_t cap, double threshold, uint64_t min_bytes,
                        uint64_t max_size, uint64_t *grow_to) {
    uint64_t floor = min_bytes > index_bytes ? min_bytes : index_bytes;
    *grow_to = 0;
    if (((double)dead > threshold * (double)(live + dead) && dead >= floor) ||
        (dele && (double)(occ + dele) > EARLY_FRACTION * (double)nslots))
        return 1;
    if (max_size && size < max_size && (double)occ > GROW_AT * (double)cap) {
        *grow_to = size * 2 < max_size ? size * 2 : max_size;
        return 1;
    }
    return 0;
}

/* An attribute as a u64 (None -> `none`); -1 if it is neither. */
static int attr_u64(PyObject *o, PyObject *name, uint64_t none, uint64_t *out) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) return -1;
    int rc = 0;
    if (v == Py_None) {
        *out = none;
    } else if (PyLong_CheckExact(v)) {
        *out = PyLong_AsUnsignedLongLong(v);
        rc = PyErr_Occurred() ? -1 : 0;
    } else {
        rc = -1;
    }
    Py_DECREF(v);
    return rc;
}

static long long attr_ll(PyObject *o, PyObject *name, int *bad) {
    PyObject *v = PyObject_GetAttr(o, name);
    long long r = -1;
    if (v != NULL && PyLong_CheckExact(v)) r = PyLong_AsLongLong(v);
    if (v == NULL || !PyLong_CheckExact(v) || PyErr_Occurred()) *bad = 1;
    Py_XDECREF(v);
    return r;
}

/* ------------------------------------------------------------------ Putter */
typedef struct {
    PyObject_HEAD
    PyObject *handle;
    PyObject *opts; /* the handle's Options last decoded (frozen: replaced, never changed) */
    uint64_t max_entries, max_size, min_bytes; /* UINT64_MAX / 0 / -: None */
    double threshold;
    int opts_ok; /* no max_bytes, no secret: the native put may answer */
    long key_size;
    unsigned long long answered, passed; /* puts done here / handed to the pure path */
    vectorcallfunc vectorcall;
} Putter;

/* The handle's options, decoded once per Options object. */
static int load_opts(Putter *p, PyObject *opts) {
    if (opts == p->opts) return p->opts_ok;
    PyObject *mb = PyObject_GetAttr(opts, S_max_bytes), *sec = PyObject_GetAttr(opts, S_secret);
    PyObject *thr = PyObject_GetAttr(opts, S_threshold);
    int ok = mb == Py_None && sec == Py_None && thr != NULL && (PyFloat_CheckExact(thr) || PyLong_CheckExact(thr));
    if (ok) {
        p->threshold = PyFloat_AsDouble(thr);
        ok = attr_u64(opts, S_max_entries, UINT64_MAX, &p->max_entries) == 0 &&
             attr_u64(opts, S_max_size, 0, &p->max_size) == 0 &&
             attr_u64(opts, S_min_bytes, 0, &p->min_bytes) == 0;
    }
    Py_XDECREF(mb);
    Py_XDECREF(sec);
    Py_XDECREF(thr);
    PyErr_Clear();
    Py_INCREF(opts);
    Py_XSETREF(p->opts, opts);
    p->opts_ok = ok;
    return ok;
}

/* What the put needs from Python objects, read before the lock is taken. */
typedef struct {
    PyObject *s, *local, *hot, *views, *roster, *lock, *tlock;
    uint64_t nslots, ss, rec_base, max_seg, cap, load, next_check, flush_due;
    int fd;
} State;

static void state_clear(State *st) {
    Py_CLEAR(st->s);
    Py_CLEAR(st->local);
    Py_CLEAR(st->hot);
    Py_CLEAR(st->views);
    Py_CLEAR(st->roster);
    Py_CLEAR(st->lock);
    Py_CLEAR(st->tlock);
}

/* capacity.caps(gen): a generation's (live, load) caps, computed and kept
 * on it by the pure code once per generation. Steals `none`. */
static PyObject *gen_caps(PyObject *none, PyObject *gen) {
    Py_DECREF(none);
    PyObject *mod = PyImport_ImportModule("mmcache._core.capacity");
    if (mod == NULL) return NULL;
    PyObject *r = PyObject_CallMethodOneArg(mod, S_caps, gen);
    Py_DECREF(mod);
    return r;
}

/* 1 with *st filled, 0: the pure path's (no exception set). A put needs
 * the handle's options to allow it (no byte cap, no secret). */
static int load_state(Putter *p, State *st, int for_put) {
    PyObject *opts = NULL, *gen = NULL, *heap = NULL, *caps = NULL, *nr = NULL;
    int ok = 0, bad = 0;
    st->s = PyObject_GetAttr(p->handle, S_s);
    if (st->s == NULL || st->s == Py_None) goto out;
    if (for_put && ((opts = PyObject_GetAttr(p->handle, S_opts)) == NULL || !load_opts(p, opts))) goto out;
    if ((gen = PyObject_GetAttr(st->s, S_gen)) == NULL || (st->hot = PyObject_GetAttr(gen, S_hot)) == NULL ||
        (heap = PyObject_GetAttr(gen, S_heap)) == NULL || (st->views = PyObject_GetAttr(heap, S_views)) == NULL ||
        (st->roster = PyObject_GetAttr(gen, S_roster)) == NULL || (nr = PyObject_GetAttr(gen, S_needs_repair)) == NULL ||
        (caps = PyObject_GetAttr(gen, S_caps)) == NULL || (caps == Py_None && (caps = gen_caps(caps, gen)) == NULL) ||
        (st->local = PyObject_GetAttr(st->s, S_local)) == NULL ||
        (st->lock = PyObject_GetAttr(st->s, S_lock)) == NULL || (st->tlock = PyObject_GetAttr(st->lock, S_tlock)) == NULL)
        goto out;
    if (nr != Py_False || !PyTuple_CheckExact(st->hot) || PyTuple_GET_SIZE(st->hot) < 5 ||
        !PyList_CheckExact(st->views) || !PyList_CheckExact(st->local) || !PyTuple_CheckExact(caps) ||
        PyTuple_GET_SIZE(caps) != 2)
        goto out;
    st->nslots = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(st->hot, 1));
    st->ss = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(st->hot, 2));
    st->rec_base = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(st->hot, 3));
    st->cap = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(caps, 0));
    st->load = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(caps, 1));
    if (PyErr_Occurred() || attr_u64(heap, S_max_seg, 0, &st->max_seg) < 0) goto out;
    st->next_check = (uint64_t)attr_ll(st->s, S_next_check, &bad);
    st->flush_due = (uint64_t)attr_ll(st->s, S_flush_due, &bad);
    st->fd = (int)attr_ll(st->lock, S_fd, &bad);
    ok = !bad && st->nslots >= 1 && st->nslots <= 0xFFFFFFFFULL && st->ss >= (uint64_t)p->key_size + SLOT_FIXED &&
         st->ss <= 65536 && st->rec_base < (1ULL << 40) && st->max_seg > SEG_HB && st->max_seg < (1ULL << 32) &&
         st->fd >= 0;
out:
    Py_XDECREF(opts);
    Py_XDECREF(gen);
    Py_XDECREF(heap);
    Py_XDECREF(caps);
    Py_XDECREF(nr);
    PyErr_Clear();
    if (!ok) state_clear(st);
    return ok;
}

/* The writer lock taken without waiting (WriterLock.try_acquire's steps):
 * its thread lock, then at depth 0 the flock. Returns the depth it was at
 * (>= 0), or -1: not taken (held elsewhere, or any error), nothing held. */
static long take_lock(State *st) {
    PyObject *args[2] = {st->tlock, Py_False};
    PyObject *r = PyObject_VectorcallMethod(S_acquire, args, 2, NULL);
    if (r != Py_True) {
        Py_XDECREF(r);
        PyErr_Clear();
        return -1;
    }
    Py_DECREF(r);
    int bad = 0;
    long depth = (long)attr_ll(st->lock, S_depth, &bad);
    PyObject *d = NULL;
    if (bad || depth < 0 || (depth == 0 && flock(st->fd, LOCK_EX | LOCK_NB) != 0)) goto undo;
    if ((d = PyLong_FromLong(depth + 1)) == NULL || PyObject_SetAttr(st->lock, S_depth, d) < 0) {
        if (depth == 0) flock(st->fd, LOCK_UN);
        goto undo;
    }
    Py_DECREF(d);
    return depth;
undo:
    Py_XDECREF(d);
    PyErr_Clear();
    r = PyObject_VectorcallMethod(S_release, args, 1, NULL);
    Py_XDECREF(r);
    PyErr_Clear();
    return -1;
}

/* WriterLock.release's steps: back to `depth`, the flock let go at 0, then
 * the thread lock. -1 with an exception if something failed (as the pure
 * release would raise), every step still tried. */
static int drop_lock(State *st, long depth) {
    int rc = 0;
    PyObject *d = PyLong_FromLong(depth);
    if (d == NULL || PyObject_SetAttr(st->lock, S_depth, d) < 0) rc = -1;
    Py_XDECREF(d);
    if (depth == 0 && flock(st->fd, LOCK_UN) != 0 && rc == 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        rc = -1;
    }
    PyObject *et = NULL, *ev = NULL, *tb = NULL;
    if (rc < 0) PyErr_Fetch(&et, &ev, &tb);
    PyObject *args[1] = {st->tlock};
    PyObject *r = PyObject_VectorcallMethod(S_release, args, 1, NULL);
    if (r == NULL) {
        rc = -1;
        if (et != NULL) PyErr_Clear(); /* the first error is the one raised */
    } else {
        Py_DECREF(r);
    }
    if (et != NULL) PyErr_Restore(et, ev, tb);
    return rc;
}

/* A put's arguments, checked. */
typedef struct {
    const uint8_t *kb, *vp;
    uint64_t n, vlen, exp, rec_len;
    unsigned kf, flags;
} Put;

/* The header's hot fields (layout.HOT). */
typedef struct {
    uint64_t occ, dele, hwm, seg, tail, live, dead, created, seq;
} Hot;

/* The index map's header read under the lock: 0 (the pure path's) if the
 * index is retired, logging for a concurrent rebuild, dirty, or a number is
 * past generation.counters_sane's ranges (the pure path repairs). */
static int read_hot(const uint8_t *idx, const State *st, Hot *h) {
    if (idx[OFF_FLAGS] || idx[OFF_LOGGING] || mmx_le32(idx + OFF_DIRTY)) return 0;
    const uint8_t *p = idx + OFF_HOT;
    h->occ = mmx_le64(p);
    h->dele = mmx_le64(p + 8);
    h->hwm = mmx_le64(p + 16);
    h->seg = mmx_le32(p + 24);
    h->tail = mmx_le64(p + 32);
    h->live = mmx_le64(p + 40);
    h->dead = mmx_le64(p + 48);
    h->created = mmx_le64(p + 56);
    h->seq = mmx_le64(p + 64);
    const uint64_t n = st->nslots;
    return !(h->occ > n || h->dele > n - h->occ || h->hwm > n || h->seg >= SEG_LIMIT || h->tail < SEG_HB ||
             h->tail > st->max_seg || h->live >= NUM_LIMIT || h->dead >= NUM_LIMIT || h->seq >= NUM_LIMIT);
}

/* slots.find for a key that fits in a slot: *found = the slot (0-based)
 * holding it, else UINT64_MAX; *free = the first free slot before it (a
 * tombstone) or where the probe ended (EMPTY), else UINT64_MAX. The probe
 * stops after nslots slots (a hostile index may have no EMPTY slot). */
static void find_slot(const uint8_t *idx, const State *st, uint64_t K, const Put *a, uint64_t *found,
                      uint64_t *free) {
    const uint64_t nslots = st->nslots, ss = st->ss;
    uint64_t i = mmx_xxh3_64(a->kb, (size_t)a->n, 0) % nslots;
    *found = *free = UINT64_MAX;
    for (uint64_t left = nslots; left; left--) {
        const uint8_t *sp = idx + HB + i * ss;
        if (sp[K] == ST_OCCUPIED && sp[K + 1] == a->kf && sp[K + 2] == a->n && memcmp(sp, a->kb, a->n) == 0) {
            uint64_t z = a->n;
            while (z < K && sp[z] == 0) z++;
            if (z == K) {
                *found = i;
                return;
            }
        }
        if (sp[K] == ST_EMPTY) {
            if (*free == UINT64_MAX) *free = i;
            return;
        }
        if (sp[K] == ST_DELETED && *free == UINT64_MAX) *free = i;
        if (++i == nslots) i = 0;
    }
}

/* The locked part: 1 done, 0 the pure path's (nothing changed). The header,
 * the slot and the record are read only now, under the lock. */
static int place(const Putter *p, State *st, const Put *a, uint64_t *counts) {
    Py_buffer ib = {0}, hb = {0}, rb = {0}, sb = {0};
    int done = 0;
    const uint64_t K = (uint64_t)p->key_size, ss = st->ss, max_seg = st->max_seg;
    uint64_t mono = clock_ns(CLOCK_MONOTONIC);
    if (mono >= st->next_check || mono >= st->flush_due) return 0; /* a staleness check or stats flush: pure */
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(st->hot, 0), &ib, PyBUF_WRITABLE) < 0) {
        ib.obj = NULL;
        goto out;
    }
    uint8_t *idx = (uint8_t *)ib.buf;
    /* the slot array inside the map (<= 2^32 * 2^16: no overflow) */
    if ((uint64_t)ib.len < HB || (uint64_t)ib.len - HB < st->nslots * ss) goto out;
    Hot hh;
    if (!read_hot(idx, st, &hh)) goto out;
    uint64_t occ = hh.occ, dele = hh.dele, hwm = hh.hwm, seg = hh.seg, tail = hh.tail, live = hh.live;
    uint64_t dead = hh.dead, created = hh.created, seq = hh.seq, found, free;
    find_slot(idx, st, K, a, &found, &free);
    uint64_t at = found != UINT64_MAX ? found : free; /* slot index (0-based) written */
    if (at == UINT64_MAX) goto out;
    uint8_t *sp = idx + HB + at * ss;
    uint64_t old = 0;
    if (found != UINT64_MAX) { /* an overwrite: the old record's size from the slot */
        old = mmx_le32(sp + K + 24);
        if (old == 0 || old > max_seg || live + a->rec_len < old) goto out; /* unknown or damaged */
    } else { /* a new key: only with room to spare (writer.write's roomy test) */
        if (!(occ < st->cap && occ < p->max_entries && (occ + dele < st->load || sp[K] != ST_EMPTY))) goto out;
        if (sp[K] == ST_DELETED && dele == 0) goto out;
        if (PyObject_GetBuffer(st->roster, &sb, PyBUF_WRITABLE) < 0) {
            sb.obj = NULL;
            goto out;
        }
        if ((uint64_t)sb.len < ROSTER_HB || ((uint64_t)sb.len - ROSTER_HB) / 4 <= occ) goto out;
    }
    /* the heap: the current segment mapped, room in the map and the segment */
    PyObject *view = seg < (uint64_t)PyList_GET_SIZE(st->views) ? PyList_GET_ITEM(st->views, seg) : NULL;
    if (view == NULL || !PyMemoryView_Check(view) || PyObject_GetBuffer(view, &hb, PyBUF_WRITABLE) < 0) {
        hb.obj = NULL;
        goto out;
    }
    uint64_t end = tail + a->rec_len;
    if (end > (uint64_t)hb.len || end > max_seg) goto out;
    /* the LRU stamp's place in the roster's u64 view */
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(st->hot, 4), &rb, PyBUF_WRITABLE) < 0) {
        rb.obj = NULL;
        goto out;
    }
    uint64_t stamp_at = st->rec_base + at;
    if ((uint64_t)rb.len / 8 <= stamp_at || ((uintptr_t)rb.buf & 7)) goto out;
    PyErr_Clear();

    /* ---- from here on nothing falls back: the stores of writer._publish */
    uint8_t *rec = (uint8_t *)hb.buf + tail;
    put64(rec + 8, a->exp);
    put32(rec + 16, (uint32_t)a->n);
    put32(rec + 20, (uint32_t)a->vlen);
    put16(rec + 24, a->flags);
    rec[26] = (uint8_t)(a->kf & KF_STR);
    rec[27] = REC_MAGIC;
    put32(rec + 28, 0);
    memcpy(rec + RH, a->kb, a->n);
    memmove(rec + RH + a->n, a->vp, a->vlen);
    put64(rec, mmx_xxh3_64(rec + 8, (size_t)(RH - 8 + a->n + a->vlen), 0));
    uint64_t now = clock_ns(CLOCK_REALTIME);
    publish_fence(); /* the record in full before anything points at it */
    idx[OFF_DIRTY] = 1;
    publish_fence();
    if (found != UINT64_MAX) {
        put32(sp + K + 8, (uint32_t)seg);
        put32(sp + K + 12, (uint32_t)tail);
        put64(sp + K + 16, now);
        put32(sp + K + 24, (uint32_t)a->rec_len);
        live = live + a->rec_len - old;
        dead += old;
    } else {
        uint8_t state = sp[K];
        if (state == ST_DELETED) dele--;
        memcpy(sp, a->kb, a->n); /* key and fields, the state as it was */
        memset(sp + a->n, 0, K - a->n);
        sp[K + 1] = (uint8_t)a->kf;
        sp[K + 2] = (uint8_t)a->n;
        sp[K + 3] = 0;
        put32(sp + K + 4, (uint32_t)occ);
        put32(sp + K + 8, (uint32_t)seg);
        put32(sp + K + 12, (uint32_t)tail);
        put64(sp + K + 16, now);
        put32(sp + K + 24, (uint32_t)a->rec_len);
        put32(sp + K + 28, 0);
        put32((uint8_t *)sb.buf + ROSTER_HB + 4 * occ, (uint32_t)(at + 1));
        publish_fence();
        sp[K] = ST_OCCUPIED; /* publish: the last store a reader depends on */
        occ++;
        if (at + 1 > hwm) hwm = at + 1;
        live += a->rec_len;
    }
    ((uint64_t *)rb.buf)[stamp_at] = mono; /* a put is a use (LRU) */
    publish_fence();
    /* the header's hot fields, dirty still 1; then dirty cleared on its own */
    uint8_t *h = idx + OFF_HOT;
    put64(h, occ);
    put64(h + 8, dele);
    put64(h + 16, hwm);
    put32(h + 24, (uint32_t)seg);
    put32(h + 28, 1);
    put64(h + 32, tail + a->rec_len);
    put64(h + 40, live);
    put64(h + 48, dead);
    put64(h + 56, created);
    put64(h + 64, seq + 1);
    publish_fence();
    idx[OFF_DIRTY] = 0;
    counts[0] = occ;
    counts[1] = dele;
    counts[2] = live;
    counts[3] = dead;
    done = 1;
out:
    if (sb.obj != NULL) PyBuffer_Release(&sb);
    if (rb.obj != NULL) PyBuffer_Release(&rb);
    if (hb.obj != NULL) PyBuffer_Release(&hb);
    if (ib.obj != NULL) PyBuffer_Release(&ib);
    PyErr_Clear();
    return done;
}

/* After a put: the SETS count, and a concurrent rebuild asked for if
 * capacity would want one (writer._ask_rebuild). */
static int after_put(const Putter *p, State *st, const uint64_t *c) {
    PyObject *v = PyList_GET_ITEM(st->local, I_SETS);
    long long n = PyLong_AsLongLong(v);
    if (n == -1 && PyErr_Occurred()) return -1;
    PyObject *nv = PyLong_FromLongLong(n + 1);
    if (nv == NULL || PyList_SetItem(st->local, I_SETS, nv) < 0) return -1;
    uint64_t occ = c[0], dele = c[1], live = c[2], dead = c[3], grow_to;
    if (!(dele || (double)dead > p->threshold * (double)(live + dead) || p->max_size)) return 0;
    if (!want_rebuild(occ, dele, live, dead, st->nslots, HB + st->nslots * st->ss, st->nslots + 1, st->cap,
                      p->threshold, p->min_bytes, p->max_size, &grow_to))
        return 0;
    if (PyObject_SetAttr(st->s, S_compact_wanted, Py_True) < 0) return -1;
    if (grow_to) {
        PyObject *g = PyLong_FromUnsignedLongLong(grow_to);
        int rc = g == NULL ? -1 : PyObject_SetAttr(st->s, S_grow_to, g);
        Py_XDECREF(g);
        return rc;
    }
    return 0;
}

/* A str or bytes key that fits in a slot; 0: the pure path's (an empty
 * key raises there; a longer one is hashed; other types are encoded). */
static int check_key(const Putter *p, PyObject *key, Put *a) {
    Py_ssize_t n;
    if (PyUnicode_CheckExact(key)) {
        a->kb = (const uint8_t *)PyUnicode_AsUTF8AndSize(key, &n); /* NULL: lone surrogates */
        a->kf = KF_STR;
    } else if (PyBytes_CheckExact(key)) {
        a->kb = (const uint8_t *)PyBytes_AS_STRING(key);
        n = PyBytes_GET_SIZE(key);
        a->kf = 0;
    } else {
        return 0;
    }
    if (a->kb == NULL || n < 1 || n > p->key_size) return 0;
    a->n = (uint64_t)n;
    return 1;
}

/* ------------------------------------------------------------------ delete
 * writer.delete's common case: the key found, its record's header read for
 * the answer (live or expired), the slot tombstoned and taken out of the
 * roster (slots.remove_slot: the last entry moved into its place), counters
 * and bytes, the write sequence, in that order between dirty = 1 and 0.
 * The pure path's: whatever begin() would repair first (also the rebuild
 * fields past generation.build_sane), a slot whose roster link does not
 * check out, a record length or a record header it would have to remap. */
static int unplace(const Putter *p, State *st, const Put *a, int *was_live) {
    Py_buffer ib = {0}, sb = {0}, hb = {0};
    int done = 0;
    const uint64_t K = (uint64_t)p->key_size, nslots = st->nslots, max_seg = st->max_seg;
    if (clock_ns(CLOCK_MONOTONIC) >= st->next_check) return 0; /* a staleness check: pure */
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(st->hot, 0), &ib, PyBUF_WRITABLE) < 0) {
        ib.obj = NULL;
        goto out;
    }
    uint8_t *idx = (uint8_t *)ib.buf;
    Hot h;
    if ((uint64_t)ib.len < HB || (uint64_t)ib.len - HB < nslots * st->ss || !read_hot(idx, st, &h)) goto out;
    if (mmx_le64(idx + 120) >= (1ULL << 48) || mmx_le32(idx + 128) >= (1u << 22) || mmx_le64(idx + 136) >= (1ULL << 48))
        goto out; /* generation.build_sane */
    uint64_t found, free;
    find_slot(idx, st, K, a, &found, &free);
    if (found == UINT64_MAX) { /* not there: False, nothing changed */
        *was_live = 0;
        done = 2;
        goto out;
    }
    uint8_t *sp = idx + HB + found * st->ss;
    uint64_t size = mmx_le32(sp + K + 24), pos = mmx_le32(sp + K + 4), slot = found + 1, seg = mmx_le32(sp + K + 8);
    uint64_t off = mmx_le32(sp + K + 12);
    if (size == 0 || size > max_seg) goto out; /* slots.recorded_size reads the record: pure */
    /* record.is_expired: an unreadable record counts as expired */
    PyObject *view = seg < (uint64_t)PyList_GET_SIZE(st->views) ? PyList_GET_ITEM(st->views, seg) : NULL;
    if (view == NULL || !PyMemoryView_Check(view) || PyObject_GetBuffer(view, &hb, PyBUF_SIMPLE) < 0) {
        hb.obj = NULL;
        goto out;
    }
    const uint64_t hlen = (uint64_t)hb.len;
    int live = 0;
    if (off >= SEG_HB) {
        if (off > hlen || hlen - off < RH) goto out; /* the pure path remaps */
        const uint8_t *rec = (const uint8_t *)hb.buf + off;
        if (rec[27] == REC_MAGIC) {
            if (off + RH + mmx_le32(rec + 16) + mmx_le32(rec + 20) > hlen) goto out;
            uint64_t exp = mmx_le64(rec + 8);
            live = !(exp && exp <= clock_ns(CLOCK_REALTIME));
        }
    }
    /* the roster link (remove_slot's `linked`), checked before any store */
    if (PyObject_GetBuffer(st->roster, &sb, PyBUF_WRITABLE) < 0) {
        sb.obj = NULL;
        goto out;
    }
    uint8_t *roster = (uint8_t *)sb.buf;
    const uint64_t rn = (uint64_t)sb.len < ROSTER_HB ? 0 : ((uint64_t)sb.len - ROSTER_HB) / 4;
    uint64_t occ = h.occ, last = occ - 1, moved = 0;
    if (!(pos < occ && occ <= rn && mmx_le32(roster + ROSTER_HB + 4 * pos) == slot)) goto out;
    if (pos < last) {
        moved = mmx_le32(roster + ROSTER_HB + 4 * last);
        if (moved < 1 || moved > nslots) goto out;
    }

    idx[OFF_DIRTY] = 1;
    publish_fence();
    sp[K] = ST_DELETED;
    publish_fence();
    if (pos < last) {
        put32(roster + ROSTER_HB + 4 * pos, (uint32_t)moved);
        put32(idx + HB + (moved - 1) * st->ss + K + 4, (uint32_t)pos);
    }
    uint8_t *c = idx + OFF_HOT;
    put64(c, occ - 1);
    put64(c + 8, h.dele + 1);
    put64(c + 40, h.live > size ? h.live - size : 0);
    put64(c + 48, h.dead + size);
    put64(c + 64, h.seq + 1);
    publish_fence();
    idx[OFF_DIRTY] = 0;
    *was_live = live;
    done = 1;
out:
    if (sb.obj != NULL) PyBuffer_Release(&sb);
    if (hb.obj != NULL) PyBuffer_Release(&hb);
    if (ib.obj != NULL) PyBuffer_Release(&ib);
    PyErr_Clear();
    return done;
}

/* delete(key): Py_True / Py_False; *pure set (and NULL returned, no error)
 * when the pure path is to answer; NULL with *pure clear: an error. */
static PyObject *do_delete(Putter *p, PyObject *key, int *pure) {
    State st = {0};
    Put a;
    PyObject *r = NULL;
    int live = 0, rc = 0;
    *pure = 1;
    if (!check_key(p, key, &a) || !load_state(p, &st, 0)) goto out;
    long depth = take_lock(&st);
    if (depth < 0) goto out;
    rc = unplace(p, &st, &a, &live);
    if (rc == 1) { /* s.local[DELETES] += 1 (not for a key that was not there) */
        PyObject *v = PyList_GET_ITEM(st.local, I_DELETES);
        long long n = PyLong_AsLongLong(v);
        PyObject *nv = n == -1 && PyErr_Occurred() ? NULL : PyLong_FromLongLong(n + 1);
        if (nv == NULL || PyList_SetItem(st.local, I_DELETES, nv) < 0) rc = -1;
    }
    if (drop_lock(&st, depth) < 0) rc = -1;
    if (rc != 0) *pure = 0;
    if (rc > 0) r = Py_NewRef(live ? Py_True : Py_False);
out:
    state_clear(&st);
    if (*pure) PyErr_Clear();
    return r;
}

static PyObject *deleter_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Putter *p = (Putter *)self;
    if (PyVectorcall_NARGS(nargsf) == 1 && kwnames == NULL) {
        int pure;
        PyObject *r = do_delete(p, args[0], &pure);
        if (!pure) {
            if (r != NULL) p->answered++;
            return r;
        }
    }
    p->passed++;
    PyObject *f = PyObject_GetAttr(p->handle, S_delete_pure);
    if (f == NULL) return NULL;
    PyObject *r = PyObject_Vectorcall(f, args, nargsf, kwnames);
    Py_DECREF(f);
    return r;
}

/* The arguments in the shapes the native put takes; 0: the pure path's. */
static int check_args(const Putter *p, PyObject *key, PyObject *value, PyObject *expire, PyObject *flags, Put *a,
                      Py_buffer *vb) {
    if (!check_key(p, key, a)) return 0;
    a->flags = 0;
    if (flags != NULL) {
        if (!PyLong_CheckExact(flags)) return 0;
        long f = PyLong_AsLong(flags);
        if (f < 0 || f > 0xFFFF) return 0; /* (-1 with an error too) */
        a->flags = (unsigned)f;
    }
    a->exp = 0;
    if (expire != Py_None) { /* args.expire_ns's common case; the rest is the pure path's */
        double d;
        if (PyFloat_CheckExact(expire))
            d = PyFloat_AS_DOUBLE(expire);
        else if (PyLong_CheckExact(expire))
            d = PyLong_AsDouble(expire);
        else
            return 0;
        if (!(d > 0 && d < FAR_S)) return 0; /* NaN, <= 0, far: pure (an error is -1.0 here) */
        uint64_t at = clock_ns(CLOCK_REALTIME) + (uint64_t)(d * 1e9);
        a->exp = at < NEVER_NS ? at : 0;
    }
    if (PyBytes_CheckExact(value)) {
        a->vp = (const uint8_t *)PyBytes_AS_STRING(value);
        a->vlen = (uint64_t)PyBytes_GET_SIZE(value);
    } else if (PyByteArray_CheckExact(value) || PyMemoryView_Check(value)) {
        if (PyObject_GetBuffer(value, vb, PyBUF_SIMPLE) < 0) { /* not contiguous, released: pure */
            vb->obj = NULL;
            return 0;
        }
        a->vp = (const uint8_t *)vb->buf;
        a->vlen = (uint64_t)vb->len;
    } else {
        return 0;
    }
    if (a->vlen >= (1ULL << 32)) return 0;
    a->rec_len = (RH + a->n + a->vlen + 7) & ~7ULL;
    return 1;
}

/* 1 done, 0 the pure path's (nothing changed, no exception), -1 an error. */
static int do_put(Putter *p, PyObject *key, PyObject *value, PyObject *expire, PyObject *flags) {
    Py_buffer vb = {0};
    State st = {0};
    int rc = 0;
    uint64_t counts[4];
    Put a;
    if (!check_args(p, key, value, expire, flags, &a, &vb) || !load_state(p, &st, 1)) goto out;
    long depth = take_lock(&st);
    if (depth < 0) goto out; /* held elsewhere: the pure path waits for it */
    rc = place(p, &st, &a, counts);
    if (rc == 1 && after_put(p, &st, counts) < 0) rc = -1;
    if (drop_lock(&st, depth) < 0) rc = -1;
    if (rc == 1) {
        PyObject *cw = PyObject_GetAttr(st.s, S_compact_wanted);
        int want = cw == NULL ? -1 : PyObject_IsTrue(cw);
        Py_XDECREF(cw);
        if (want < 0) {
            rc = -1;
        } else if (want) { /* TableWrites._compact: it runs with the lock let go */
            PyObject *args[2] = {p->handle, st.s};
            PyObject *r = PyObject_VectorcallMethod(S_compact, args, 2, NULL);
            if (r == NULL) rc = -1;
            Py_XDECREF(r);
        }
    }
out:
    if (vb.obj != NULL) PyBuffer_Release(&vb);
    state_clear(&st);
    if (rc == 0) PyErr_Clear();
    return rc;
}

static PyObject *putter_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Putter *p = (Putter *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *expire = nargs > 2 ? args[2] : Py_None, *flags = NULL;
    int shape = nargs == 2 || nargs == 3;
    if (kwnames != NULL) {
        for (Py_ssize_t i = 0; shape && i < PyTuple_GET_SIZE(kwnames); i++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, i);
            if (name == S_flags || PyUnicode_Compare(name, S_flags) == 0)
                flags = args[nargs + i];
            else if (nargs == 2 && (name == S_expire || PyUnicode_Compare(name, S_expire) == 0))
                expire = args[nargs + i];
            else
                shape = 0; /* expire_at_ns, key=, value=, a wrong name: the pure path's */
        }
        PyErr_Clear();
    }
    if (shape) {
        int rc = do_put(p, args[0], args[1], expire, flags);
        if (rc < 0) return NULL;
        if (rc == 1) {
            p->answered++;
            Py_RETURN_NONE;
        }
    }
    p->passed++;
    PyObject *pure = PyObject_GetAttr(p->handle, S_put_pure);
    if (pure == NULL) return NULL;
    PyObject *r = PyObject_Vectorcall(pure, args, nargsf, kwnames);
    Py_DECREF(pure);
    return r;
}

static PyObject *putter_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *handle;
    int delete = 0;
    static char *kwlist[] = {"handle", "delete", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|p", kwlist, &handle, &delete)) return NULL;
    PyObject *ks = PyObject_GetAttr(handle, S_key_size);
    if (ks == NULL) return NULL;
    long key_size = PyLong_AsLong(ks);
    Py_DECREF(ks);
    if (key_size == -1 && PyErr_Occurred()) return NULL;
    if (key_size < 16 || key_size > 255) {
        PyErr_SetString(PyExc_ValueError, "key_size out of range");
        return NULL;
    }
    Putter *p = (Putter *)type->tp_alloc(type, 0);
    if (p == NULL) return NULL;
    Py_INCREF(handle);
    p->handle = handle;
    p->key_size = key_size;
    p->vectorcall = delete ? deleter_call : putter_call;
    return (PyObject *)p;
}

static int putter_traverse(Putter *p, visitproc visit, void *arg) {
    Py_VISIT(p->handle);
    Py_VISIT(p->opts);
    return 0;
}

static int putter_clear(Putter *p) {
    Py_CLEAR(p->handle);
    Py_CLEAR(p->opts);
    return 0;
}

static void putter_dealloc(Putter *p) {
    PyObject_GC_UnTrack(p);
    putter_clear(p);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyObject *putter_counts(PyObject *self, PyObject *unused) {
    (void)unused;
    Putter *p = (Putter *)self;
    return Py_BuildValue("(KK)", p->answered, p->passed);
}

static PyMethodDef putter_methods[] = {
    {"counts", putter_counts, METH_NOARGS, "(calls answered natively, calls handed to the pure path)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PutterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mmcache._native._speedups.Putter",
    .tp_basicsize = sizeof(Putter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Putter(handle, delete=False): MmapCache.put (or delete) through the compiled path.",
    .tp_new = putter_new,
    .tp_traverse = (traverseproc)putter_traverse,
    .tp_clear = (inquiry)putter_clear,
    .tp_dealloc = (destructor)putter_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Putter, vectorcall),
    .tp_methods = putter_methods,
};

/* rebuild_wanted(occ, dele, live, dead, nslots, index_bytes, size, cap,
 * threshold, min_bytes, max_size or None) -> (bool, grow_to or None): the C
 * mirror of capacity.rebuild_wanted, exposed for the test that compares them. */
static PyObject *native_rebuild_wanted(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long occ, dele, live, dead, nslots, ib, size, cap, min_bytes;
    double thr;
    PyObject *ms;
    if (!PyArg_ParseTuple(args, "KKKKKKKKdKO", &occ, &dele, &live, &dead, &nslots, &ib, &size, &cap, &thr,
                          &min_bytes, &ms))
        return NULL;
    unsigned long long max_size = ms == Py_None ? 0 : PyLong_AsUnsignedLongLong(ms);
    if (PyErr_Occurred()) return NULL;
    uint64_t grow_to;
    int w = want_rebuild(occ, dele, live, dead, nslots, ib, size, cap, thr, min_bytes, max_size, &grow_to);
    if (grow_to) return Py_BuildValue("(OK)", w ? Py_True : Py_False, (unsigned long long)grow_to);
    return Py_BuildValue("(OO)", w ? Py_True : Py_False, Py_None);
}

static PyMethodDef write_methods[] = {
    {"rebuild_wanted", native_rebuild_wanted, METH_VARARGS, "capacity.rebuild_wanted, as the C put computes it."},
    {NULL, NULL, 0, NULL},
};

int mmx_write_init(PyObject *m) {
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    INTERN(S_s, "_s");
    INTERN(S_opts, "_opts");
    INTERN(S_gen, "gen");
    INTERN(S_hot, "hot");
    INTERN(S_heap, "heap");
    INTERN(S_views, "views");
    INTERN(S_max_seg, "max_segment_bytes");
    INTERN(S_needs_repair, "needs_repair");
    INTERN(S_caps, "caps");
    INTERN(S_roster, "roster");
    INTERN(S_next_check, "next_check");
    INTERN(S_flush_due, "flush_due");
    INTERN(S_local, "local");
    INTERN(S_lock, "lock");
    INTERN(S_tlock, "_tlock");
    INTERN(S_depth, "_depth");
    INTERN(S_fd, "_fd");
    INTERN(S_acquire, "acquire");
    INTERN(S_release, "release");
    INTERN(S_compact_wanted, "compact_wanted");
    INTERN(S_grow_to, "grow_to");
    INTERN(S_compact, "_compact");
    INTERN(S_put_pure, "_put_pure");
    INTERN(S_delete_pure, "_delete_pure");
    INTERN(S_flags, "flags");
    INTERN(S_expire, "expire");
    INTERN(S_key_size, "_key_size");
    INTERN(S_max_bytes, "max_bytes");
    INTERN(S_secret, "secret");
    INTERN(S_max_entries, "max_entries");
    INTERN(S_max_size, "max_size");
    INTERN(S_threshold, "compact_threshold");
    INTERN(S_min_bytes, "compact_min_bytes");
#undef INTERN
    if (PyType_Ready(&PutterType) < 0 || PyModule_AddObjectRef(m, "Putter", (PyObject *)&PutterType) < 0) return -1;
    for (PyMethodDef *d = write_methods; d->ml_name != NULL; d++) {
        PyObject *f = PyCFunction_New(d, NULL);
        if (f == NULL || PyModule_AddObject(m, d->ml_name, f) < 0) {
            Py_XDECREF(f);
            return -1;
        }
    }
    return 0;
}
