/* mmcache/_native/probe.h: the compiled get's state and probe, included
 * once, by _speedups.c (which holds the Python types around them).
 *
 * binding: what a Table points into (exports of the index map and of the
 * roster's u64 view, the heap's segment views with an export of each one
 * used, the geometry, the next staleness check, the counts); probe(): one
 * get over a bound binding, the pure _get_probe's steps on the same bytes.
 * Every offset and length read from a map is checked by format.h's readers.
 */
#ifndef MMCACHE_PROBE_H
#define MMCACHE_PROBE_H

#include <time.h>

#include "format.h"

static PyObject *FALLBACK; /* the module's `FALLBACK` sentinel */
#ifndef PROBE_PREFETCH_SLOTS
#define PROBE_PREFETCH_SLOTS 8 /* slots whose state line a probe asks for at once */
#endif
/* How far CLOCK_MONOTONIC_COARSE may lag CLOCK_MONOTONIC (twice its
 * resolution, set at import): the staleness check reads the coarse clock
 * (~12 ns here against ~45 ns) and the fine one only within this of due. */
static uint64_t COARSE_SLACK = 20000000;

static inline uint64_t clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static PyObject *fallback(void) {
    PyErr_Clear();
    Py_INCREF(FALLBACK);
    return FALLBACK;
}

/* ----------------------------------------------------------------- binding
 * What a Table points into. bound == 0: nothing held, every get falls back. */
typedef struct {
    int bound;
    Py_buffer ib;  /* the index map (ib.obj != NULL while held) */
    Py_buffer rb;  /* the roster's u64 view, writable; rb.obj == NULL: no stamps */
    mmf_index ix;
    uint64_t rec_base;   /* roster u64 index of slot 1's stamp */
    PyObject *views;     /* Heap.views: memoryviews of the segments (or None) */
    Py_ssize_t ncache;   /* entries of seg_obj / seg_buf (moved by realloc: the exporters
                          * are memoryviews, whose release does not use the Py_buffer's address) */
    PyObject **seg_obj;  /* the memoryview whose export seg_buf[i] holds, or NULL */
    Py_buffer *seg_buf;
    PyObject *retired;   /* list: views the heap replaced, kept alive until the next bind (see segment) */
    long long next_check; /* CLOCK_MONOTONIC ns of the next staleness check */
    unsigned long long hits, misses; /* not yet taken into SharedTable.local */
} binding;

static void binding_release(binding *b) {
    b->bound = 0;
    PyObject *views = b->views, **objs = b->seg_obj, *retired = b->retired;
    Py_buffer *bufs = b->seg_buf;
    Py_ssize_t n = b->ncache;
    b->views = NULL;
    b->retired = NULL;
    b->seg_obj = NULL;
    b->seg_buf = NULL;
    b->ncache = 0;
    if (b->ib.obj != NULL) PyBuffer_Release(&b->ib);
    if (b->rb.obj != NULL) PyBuffer_Release(&b->rb);
    b->ib.obj = b->rb.obj = NULL;
    /* The fields are cleared before any reference is dropped: a dealloc
     * that ran code could not find a half-released binding. */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (objs[i] != NULL) {
            PyBuffer_Release(&bufs[i]);
            Py_DECREF(objs[i]);
        }
    }
    PyMem_Free(objs);
    PyMem_Free(bufs);
    Py_XDECREF(views);
    Py_XDECREF(retired);
}

/* Bind to one generation's maps. A geometry that does not fit its map
 * binds nothing (every get falls back: the pure path decides about the
 * damage). Returns -1 with an exception only for a caller's mistake (a
 * views that is not a list, an index that is no buffer). */
static int binding_bind(binding *b, PyObject *idx, unsigned long long nslots, unsigned long long ss,
                        unsigned long long ks, unsigned long long rec_base, PyObject *recency, PyObject *views) {
    if (!PyList_Check(views)) {
        PyErr_SetString(PyExc_TypeError, "views must be a list");
        return -1;
    }
    /* Made first: allocating a tracked object may run the collector (and
     * code); nothing is held yet. */
    PyObject *retired = PyList_New(0);
    if (retired == NULL) return -1;
    Py_buffer ib, rb;
    if (PyObject_GetBuffer(idx, &ib, PyBUF_SIMPLE) < 0) {
        Py_DECREF(retired);
        return -1;
    }
    rb.obj = NULL;
    if (recency != Py_None && PyObject_GetBuffer(recency, &rb, PyBUF_WRITABLE) < 0) {
        PyErr_Clear(); /* a read-only map: no stamps */
        rb.obj = NULL;
    }
    binding_release(b);
    b->ib = ib;
    b->rb = rb;
    b->ix.idx = (const uint8_t *)ib.buf;
    b->ix.len = (uint64_t)ib.len;
    b->ix.nslots = nslots;
    b->ix.ss = ss;
    b->ix.ks = ks;
    b->rec_base = rec_base;
    Py_INCREF(views);
    b->views = views;
    b->retired = retired;
    b->bound = mmf_geometry_ok(&b->ix) && rec_base <= (1ULL << 40);
    return 0;
}

/* The mapped bytes of heap segment `seg`, or NULL (not mapped: the pure
 * path maps it). The export of a segment's current view is kept; a view the
 * heap replaced (a remap after growth) is released when next met. */
static const Py_buffer *segment(binding *b, uint64_t seg) {
    if (seg >= (uint64_t)PyList_GET_SIZE(b->views)) return NULL;
    PyObject *v = PyList_GET_ITEM(b->views, (Py_ssize_t)seg);
    if ((Py_ssize_t)seg < b->ncache && b->seg_obj[seg] == v) return &b->seg_buf[seg];
    if (!PyMemoryView_Check(v)) return NULL;
    if ((Py_ssize_t)seg >= b->ncache) {
        Py_ssize_t n = (Py_ssize_t)seg + 1;
        PyObject **objs = PyMem_Realloc(b->seg_obj, (size_t)n * sizeof(PyObject *));
        if (objs == NULL) return NULL;
        b->seg_obj = objs;
        Py_buffer *bufs = PyMem_Realloc(b->seg_buf, (size_t)n * sizeof(Py_buffer));
        if (bufs == NULL) return NULL;
        b->seg_buf = bufs;
        for (Py_ssize_t i = b->ncache; i < n; i++) objs[i] = NULL;
        b->ncache = n;
    }
    Py_buffer nb;
    if (PyObject_GetBuffer(v, &nb, PyBUF_SIMPLE) < 0) {
        PyErr_Clear(); /* a released view: the pure path */
        return NULL;
    }
    PyObject *old = b->seg_obj[seg];
    Py_buffer ob = b->seg_buf[seg];
    Py_INCREF(v);
    b->seg_obj[seg] = v;
    b->seg_buf[seg] = nb;
    if (old != NULL) {
        PyBuffer_Release(&ob); /* a memoryview's release only counts: no code runs */
        /* The old view is not let go here: if this were its last reference,
         * the mmap's dealloc would unmap with the GIL released, and another
         * thread could rebind this binding (freeing seg_buf) in the middle of
         * this get. It lives in `retired` until the next bind or unbind. */
        if (b->retired == NULL || PyList_Append(b->retired, old) < 0) {
            PyErr_Clear();
            return &b->seg_buf[seg]; /* no memory to retire it: keep (leak) the reference */
        }
        Py_DECREF(old); /* not the last: retired holds it */
    }
    return &b->seg_buf[seg];
}

/* One get on a bound binding: the value (bytes; a memoryview of the mapped
 * record from view_min bytes on, when view_min > 0), (value, flags) with
 * with_flags, `dflt` on a miss, FALLBACK for the pure path, NULL on error. */
static PyObject *probe(binding *b, PyObject *key, unsigned long long key_size, int track, PyObject *dflt,
                       int with_flags, uint64_t view_min) {
    const char *kb;
    Py_ssize_t n;
    unsigned kf;
    if (PyUnicode_CheckExact(key)) {
        kb = PyUnicode_AsUTF8AndSize(key, &n); /* NULL for lone surrogates: the pure path */
        if (kb == NULL) return fallback();
        kf = MMF_KF_STR;
    } else if (PyBytes_CheckExact(key)) {
        kb = PyBytes_AS_STRING(key);
        n = PyBytes_GET_SIZE(key);
        kf = 0;
    } else {
        return fallback();
    }
    const mmf_index *ix = &b->ix;
    const uint64_t K = ix->ks;
    if (!b->bound || n <= 0 || (uint64_t)n > K || key_size != K || b->next_check <= 0) return fallback();
    uint64_t i = mmx_xxh3_64(kb, (size_t)n, 0) % ix->nslots;
    /* A probe reads the home slot's key and state and, for a miss, the state
     * of the next few slots (linear probing at load <= 1/2: 2.5 slots on
     * average, more in a cluster). On a large table each line is a cache miss
     * (~150 ns here): ask for them together, not one after another, and
     * before the checks below, which then run while the lines are on their
     * way (hints inside the map: never a read, never a fault, harmless if the
     * get falls back; a probe that wraps past the last slot just waits). */
    {
        const uint8_t *p0 = mmf_slot(ix, i);
        const uint64_t room = (uint64_t)(ix->idx + ix->len - p0);
        __builtin_prefetch(p0);
        for (uint64_t j = 0, at = K; j < PROBE_PREFETCH_SLOTS && at < room; j++, at += ix->ss)
            __builtin_prefetch(p0 + at);
    }
    /* The staleness check: due at next_check on time.monotonic_ns()'s clock.
     * The coarse clock lags it by less than COARSE_SLACK, so a due check is
     * never missed; the fine clock is read only near it, or for a stamp. */
    uint64_t now = 0, nc = (uint64_t)b->next_check;
    if (clock_ns(CLOCK_MONOTONIC_COARSE) + COARSE_SLACK >= nc && (now = clock_ns(CLOCK_MONOTONIC)) >= nc)
        return fallback();
    if (ix->idx[MMF_OFF_FLAGS] /* RETIRED (or anything else in the first flags byte) */) return fallback();

    const uint8_t *slot = NULL;
    for (uint64_t left = ix->nslots;; left--) {
        const uint8_t *sp = mmf_slot(ix, i);
        const uint8_t *st = sp + K;
        if (st[MMF_SLOT_STATE] == MMF_OCCUPIED && st[MMF_SLOT_KFLAGS] == kf && st[MMF_SLOT_KLEN] == (uint8_t)n &&
            memcmp(sp, kb, (size_t)n) == 0) {
            if (mmf_all_zero(sp + n, (size_t)(K - (uint64_t)n))) {
                slot = sp;
                break;
            }
        }
        if (st[MMF_SLOT_STATE] == MMF_EMPTY || left == 0) break; /* a hostile index may have no EMPTY slot */
        if (++i == ix->nslots) i = 0;
    }
    if (slot == NULL) {
        b->misses++;
        Py_INCREF(dflt);
        return dflt;
    }
    uint64_t seg = mmx_le32(slot + K + MMF_SLOT_SEG), off = mmx_le32(slot + K + MMF_SLOT_OFF);
    const Py_buffer *sb = segment(b, seg);
    if (sb == NULL) return fallback();
    const uint8_t *heap = (const uint8_t *)sb->buf;
    const uint64_t hlen = (uint64_t)sb->len;
    /* Fetch the record's first lines and the stamp's line now, together:
     * on a large table each is a cache miss (hints: never a read, never a fault). */
    if (off < hlen) {
        __builtin_prefetch(heap + off);
        if (hlen - off > 64) __builtin_prefetch(heap + off + 64);
    }
    uint64_t at = mmf_stamp_index(b->rec_base, i);
    int stamp = track && b->rb.obj != NULL && (uint64_t)b->rb.len / 8 > at && ((uintptr_t)b->rb.buf & 7) == 0;
    if (stamp) __builtin_prefetch((uint64_t *)b->rb.buf + at, 1);
    mmf_record r;
    if (!mmf_read_record(heap, hlen, off, &r) || r.klen != (uint64_t)n || ((r.kflags ^ kf) & MMF_KF_STR) ||
        memcmp(heap + r.key_at, kb, (size_t)n) != 0 || !mmf_checksum_ok(heap, off, &r))
        return fallback(); /* a racing writer, damage, or a short map: the pure path retries and decides */
    if (r.expire && r.expire <= clock_ns(CLOCK_REALTIME)) {
        b->misses++;
        Py_INCREF(dflt);
        return dflt;
    }
    /* The racy, lock-free u64 store the pure path makes (see layout's
     * roster): only into a writable map, only inside it, 8-aligned. */
    if (stamp) ((uint64_t *)b->rb.buf)[at] = now ? now : clock_ns(CLOCK_MONOTONIC);
    PyObject *value;
    if (view_min && r.vlen >= view_min) {
        /* a memoryview of the mapped record, as _get_view's (held across a
         * call that may run code, as the binding may be rebound meanwhile) */
        PyObject *v = b->seg_obj[seg];
        Py_INCREF(v);
        value = PySequence_GetSlice(v, (Py_ssize_t)r.value_at, (Py_ssize_t)r.end);
        Py_DECREF(v);
    } else {
        value = PyBytes_FromStringAndSize((const char *)heap + r.value_at, (Py_ssize_t)r.vlen);
    }
    if (value == NULL) return NULL;
    b->hits++;
    if (!with_flags) return value;
    PyObject *f = PyLong_FromUnsignedLong(r.flags);
    PyObject *result = f ? PyTuple_Pack(2, value, f) : NULL;
    Py_XDECREF(f);
    Py_DECREF(value);
    return result;
}

#endif
