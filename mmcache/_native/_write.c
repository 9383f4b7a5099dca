/* mmcache._native._speedups, the write side: Putter, MmapCache.put, add
 * and delete in C.
 *
 * A Putter is what MmapCache installs as a handle's `put`, with add=True as
 * its `add` (a put that leaves a live entry as it is: False) and with
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
 * flush due, a retired or dirty index, needs_repair, a number of
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
#include "_write_int.h"
#include "xxh3.h"

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

/* The locked part: 1 done, 2 an add that found a live entry (nothing
 * changed), 0 the pure path's (nothing changed). The header, the slot and
 * the record are read only now, under the lock. */
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
    if (found != UINT64_MAX && p->only_if_absent) { /* an add: a live entry stays (writer._make_room) */
        int live = record_live(st, sp, K);
        if (live) {
            done = live > 0 ? 2 : 0;
            goto out;
        }
    }
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
    if (hh.logging) log_change(idx, at + 1);
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

/* 1 stored, 2 an add that found a live entry, 0 the pure path's (nothing changed, no
 * exception), -1 an error. */
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
    if (rc > 0) {
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
        if (rc > 0) {
            p->answered++;
            if (p->only_if_absent) return Py_NewRef(rc == 1 ? Py_True : Py_False);
            Py_RETURN_NONE;
        }
    }
    p->passed++;
    PyObject *pure = PyObject_GetAttr(p->handle, p->only_if_absent ? S_add_pure : S_put_pure);
    if (pure == NULL) return NULL;
    PyObject *r = PyObject_Vectorcall(pure, args, nargsf, kwnames);
    Py_DECREF(pure);
    return r;
}

static PyObject *putter_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *handle;
    int delete = 0, add = 0;
    static char *kwlist[] = {"handle", "delete", "add", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|pp", kwlist, &handle, &delete, &add)) return NULL;
    if (delete && add) {
        PyErr_SetString(PyExc_ValueError, "a Putter is a put, an add or a delete");
        return NULL;
    }
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
    p->only_if_absent = add;
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
    .tp_doc = "Putter(handle, delete=False, add=False): MmapCache.put (add, delete) through the compiled path.",
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
    if (w_intern() < 0) return -1;
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
