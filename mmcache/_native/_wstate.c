/* The write side's shared steps (see _write_int.h): the state a call reads
 * from the handle's Python objects, the writer lock taken without waiting
 * and let go, the header's numbers, the probe, the key. */
#include "_write_int.h" /* (Python.h first) */

#include <errno.h>
#include <sys/file.h>

#include "format.h"

PyObject *S_s, *S_opts, *S_gen, *S_hot, *S_heap, *S_views, *S_max_seg, *S_needs_repair, *S_caps,
    *S_roster, *S_next_check, *S_flush_due, *S_local, *S_lock, *S_tlock, *S_depth, *S_fd, *S_acquire,
    *S_release, *S_compact_wanted, *S_grow_to, *S_compact, *S_put_pure, *S_add_pure, *S_delete_pure, *S_flags, *S_expire, *S_key_size,
    *S_max_bytes, *S_secret, *S_max_entries, *S_max_size, *S_threshold, *S_min_bytes;

int w_intern(void) {
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
    INTERN(S_add_pure, "_add_pure");
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


void state_clear(State *st) {
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
int load_state(Putter *p, State *st, int for_put) {
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
        !PyList_CheckExact(st->views) || !PyList_CheckExact(st->local) || PyList_GET_SIZE(st->local) <= I_DELETES ||
        !PyTuple_CheckExact(caps) || PyTuple_GET_SIZE(caps) != 2)
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

/* How long a put spins for a flock another process holds, retrying without
 * blocking (as WriterLock._wait does before it sleeps), before it hands the
 * call to the pure path (which sleeps in flock with the GIL let go). A native put holds the lock ~1 us, so a short
 * spin nearly always wins it; sleeping instead costs a wakeup (tens of us
 * here) and a pure put: with two processes putting, nearly half the puts went
 * that way. Bounded far below the GIL's switch interval (5 ms): other threads
 * are not frozen by it. */
#ifndef LOCK_SPIN_NS
#define LOCK_SPIN_NS 20000
#endif

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* flock(LOCK_EX) without sleeping: retried for up to LOCK_SPIN_NS while
 * another holder has it. 0 taken, -1 not. */
static int flock_spin(int fd) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return 0;
    if (errno != EWOULDBLOCK) return -1;
    const uint64_t until = clock_ns(CLOCK_MONOTONIC) + LOCK_SPIN_NS;
    do {
        for (int i = 0; i < 16; i++) cpu_relax();
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) return 0;
    } while (errno == EWOULDBLOCK && clock_ns(CLOCK_MONOTONIC) < until);
    return -1;
}

/* The writer lock taken without sleeping (WriterLock.try_acquire's steps):
 * its thread lock, then at depth 0 the flock (flock_spin). Returns the depth
 * it was at (>= 0), or -1: not taken (held elsewhere, or any error), nothing
 * held. */
long take_lock(State *st) {
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
    if (bad || depth < 0 || (depth == 0 && flock_spin(st->fd) != 0)) goto undo;
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
int drop_lock(State *st, long depth) {
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


/* The index map's header read under the lock: 0 (the pure path's) if the
 * index is retired, dirty, has a flag this code does not know, or a number is
 * past generation.counters_sane's ranges (the pure path repairs). h->logging:
 * a concurrent rebuild is copying (FLAG_LOGGING): the write logs its slots. */
int read_hot(const uint8_t *idx, const State *st, Hot *h) {
    if (idx[OFF_FLAGS] || (idx[OFF_LOGGING] & ~1u) || mmx_le32(idx + OFF_DIRTY)) return 0;
    h->logging = idx[OFF_LOGGING] & 1;
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

/* slots.log_change: note for a concurrent rebuild that `slot` (1-based)
 * changed. The count goes one past the log's capacity to say "overflowed:
 * rescan every slot", and stops there. Under the writer lock. */
void log_change(uint8_t *idx, uint64_t slot) {
    uint32_t n = mmx_le32(idx + MMF_OFF_LOG);
    if (n < MMF_LOG_CAP) put32(idx + MMF_OFF_LOG_ENTRIES + 4 * (uint64_t)n, (uint32_t)slot);
    if (n <= MMF_LOG_CAP) put32(idx + MMF_OFF_LOG, n + 1);
}

/* slots.find for a key that fits in a slot: *found = the slot (0-based)
 * holding it, else UINT64_MAX; *free = the first free slot before it (a
 * tombstone) or where the probe ended (EMPTY), else UINT64_MAX. The probe
 * stops after nslots slots (a hostile index may have no EMPTY slot). */
void find_slot(const uint8_t *idx, const State *st, uint64_t K, const Put *a, uint64_t *found,
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

/* A str or bytes key that fits in a slot; 0: the pure path's (an empty
 * key raises there; a longer one is hashed; other types are encoded). */
int check_key(const Putter *p, PyObject *key, Put *a) {
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

/* record.is_expired's answer for the record slot `sp` points at, from its
 * header alone (no checksum): 1 live, 0 expired or unreadable (as the pure
 * path counts it), -1 the pure path's (a segment not mapped here, or a
 * record past this process's map of it: the pure path remaps). */
int record_live(const State *st, const uint8_t *sp, uint64_t K) {
    uint64_t seg = mmx_le32(sp + K + 8), off = mmx_le32(sp + K + 12);
    PyObject *view = seg < (uint64_t)PyList_GET_SIZE(st->views) ? PyList_GET_ITEM(st->views, seg) : NULL;
    Py_buffer hb;
    if (view == NULL || !PyMemoryView_Check(view) || PyObject_GetBuffer(view, &hb, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        return -1;
    }
    const uint64_t hlen = (uint64_t)hb.len;
    int live = 0;
    if (off >= SEG_HB) {
        const uint8_t *rec = (const uint8_t *)hb.buf + off;
        if (off > hlen || hlen - off < RH)
            live = -1;
        else if (rec[27] != REC_MAGIC)
            live = 0;
        else if (off + RH + mmx_le32(rec + 16) + mmx_le32(rec + 20) > hlen) /* < 2^35: no overflow */
            live = -1;
        else {
            uint64_t exp = mmx_le64(rec + 8);
            live = !(exp && exp <= clock_ns(CLOCK_REALTIME));
        }
    }
    PyBuffer_Release(&hb);
    return live;
}
