/* mmcache._native._speedups: the compiled get of MmapCache (see
 * mmcache/_native/__init__.py for the glue and docs/FORMAT.md for the bytes).
 *
 * get() does what MmapCache._get_probe does for a key that fits in a slot:
 * hash, linear probe over the index map, record checks (magic, key, STR
 * flag, xxh3_64 checksum), expiry, the LRU stamp, the copy of the value.
 * Files are untrusted: every offset and length read from a map is checked
 * against that map's size before it is used, in 64-bit arithmetic that
 * cannot overflow (all such fields are u32). On anything unusual (a retired
 * index, a due staleness check, a record that does not check out, an
 * unmapped segment, a key type or size it does not handle) it returns the
 * FALLBACK sentinel and the caller takes the pure-Python path, which is the
 * reference: the native code never guesses.
 *
 * The GIL is held throughout (a call is well under a microsecond); the
 * buffers it reads stay exported (pinned) for the duration of the call.
 * Not built for free-threaded CPython.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

#include "_write.h" /* Putter: the put (_write.c) */
#include "xxh3.h"

#define HEADER_BYTES 4096
#define RECORD_HEADER 32
#define REC_MAGIC 0xA7
#define OCCUPIED 1
#define EMPTY 0
#define KF_STR 2
#define SLOT_FIXED 32

static PyObject *FALLBACK; /* the module's `FALLBACK` sentinel */

static inline uint64_t clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* local[i] += 1 on the process's unflushed statistics list. */
static int count(PyObject *local, Py_ssize_t i) {
    if (!PyList_CheckExact(local) || PyList_GET_SIZE(local) <= i) return 0;
    long long v = PyLong_AsLongLong(PyList_GET_ITEM(local, i));
    if (v == -1 && PyErr_Occurred()) return -1;
    PyObject *n = PyLong_FromLongLong(v + 1);
    if (n == NULL) return -1;
    return PyList_SetItem(local, i, n); /* steals n */
}

static PyObject *fallback(void) {
    PyErr_Clear();
    Py_INCREF(FALLBACK);
    return FALLBACK;
}

/* get(hot, views, key, key_size, track, next_check, local, default, with_flags)
 *   hot: Generation.hot = (idx, nslots, slot_size, rec_base, recency, maps)
 *   views: Heap.views (memoryviews of the segments, or None)
 *   key_size: the handle's key size (0: never answer, e.g. a handle with a secret)
 *   track: store an LRU stamp on a hit
 *   next_check: SharedTable.next_check (monotonic ns); at or past it: FALLBACK
 *   local: SharedTable.local, hits at [0] and misses at [1] are counted here
 * Returns the value (bytes), (value, flags) with with_flags, `default` on a
 * miss, or FALLBACK. */
static PyObject *do_get(PyObject *hot, PyObject *views, PyObject *key, long key_size, int track,
                        long long next_check, PyObject *local, PyObject *dflt, int with_flags,
                        uint64_t view_min) {
    if (!PyTuple_CheckExact(hot) || PyTuple_GET_SIZE(hot) < 5 || !PyList_CheckExact(views)) return fallback();
    const char *kb;
    Py_ssize_t n;
    unsigned kf;
    if (PyUnicode_CheckExact(key)) {
        kb = PyUnicode_AsUTF8AndSize(key, &n); /* NULL for lone surrogates: the pure path */
        if (kb == NULL) return fallback();
        kf = KF_STR;
    } else if (PyBytes_CheckExact(key)) {
        kb = PyBytes_AS_STRING(key);
        n = PyBytes_GET_SIZE(key);
        kf = 0;
    } else {
        return fallback();
    }
    if (n <= 0 || key_size < 16 || key_size > 255 || n > key_size) return fallback();
    uint64_t now = clock_ns(CLOCK_MONOTONIC); /* time.monotonic_ns()'s clock */
    if (next_check <= 0 || now >= (uint64_t)next_check) return fallback();

    unsigned long long nslots = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(hot, 1));
    unsigned long long ss = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(hot, 2));
    unsigned long long rec_base = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(hot, 3));
    if (PyErr_Occurred()) return fallback();
    if (nslots < 1 || nslots > 0xFFFFFFFFULL || ss < (unsigned long long)key_size + SLOT_FIXED ||
        ss > 65536 || rec_base > (1ULL << 40))
        return fallback();

    Py_buffer ib;
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(hot, 0), &ib, PyBUF_SIMPLE) < 0) return fallback();
    PyObject *result = NULL;
    Py_buffer hb, rb;
    hb.obj = NULL;
    rb.obj = NULL;
    const uint8_t *idx = (const uint8_t *)ib.buf;
    const uint64_t K = (uint64_t)key_size;
    /* The whole slot array must lie inside the index map (<= 2^32 * 2^16). */
    if ((uint64_t)ib.len < HEADER_BYTES || (uint64_t)ib.len - HEADER_BYTES < nslots * ss ||
        idx[12] /* RETIRED (or anything else in the first flags byte): the pure path */) {
        result = fallback();
        goto done;
    }

    uint64_t i = mmx_xxh3_64(kb, (size_t)n, 0) % nslots;
    const uint8_t *slot = NULL;
    for (uint64_t left = nslots;; left--) {
        const uint8_t *sp = idx + HEADER_BYTES + i * ss;
        if (sp[K] == OCCUPIED && sp[K + 1] == kf && sp[K + 2] == (uint8_t)n && memcmp(sp, kb, (size_t)n) == 0) {
            uint64_t z = (uint64_t)n;
            while (z < K && sp[z] == 0) z++;
            if (z == K) {
                slot = sp;
                break;
            }
        }
        if (sp[K] == EMPTY || left == 0) break; /* a hostile index may have no EMPTY slot */
        if (++i == nslots) i = 0;
    }
    if (slot == NULL) {
        if (count(local, 1) < 0) goto done;
        Py_INCREF(dflt);
        result = dflt;
        goto done;
    }
    if (track) {
        /* The roster map, for the LRU stamp of a hit: a writable map only.
         * The stamp's line is fetched now, while the record's is (both are
         * cache misses on a large table; a hint, never a read or a fault). */
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(hot, 4), &rb, PyBUF_WRITABLE) < 0) {
            PyErr_Clear();
            rb.obj = NULL;
        } else if ((uint64_t)rb.len / 8 > rec_base + i) {
            __builtin_prefetch((uint64_t *)rb.buf + rec_base + i, 1);
        }
    }
    uint64_t seg = mmx_le32(slot + K + 8), off = mmx_le32(slot + K + 12);
    if (seg >= (uint64_t)PyList_GET_SIZE(views) || !PyMemoryView_Check(PyList_GET_ITEM(views, seg)) ||
        PyObject_GetBuffer(PyList_GET_ITEM(views, seg), &hb, PyBUF_SIMPLE) < 0) {
        hb.obj = NULL;
        result = fallback();
        goto done;
    }
    const uint8_t *heap = (const uint8_t *)hb.buf;
    const uint64_t hlen = (uint64_t)hb.len;
    if (off > hlen || hlen - off < RECORD_HEADER) {
        result = fallback(); /* segment mapped shorter than the record: the pure path remaps */
        goto done;
    }
    const uint8_t *rec = heap + off;
    uint64_t csum = mmx_le64(rec), exp = mmx_le64(rec + 8);
    uint64_t klen = mmx_le32(rec + 16), vlen = mmx_le32(rec + 20);
    unsigned flags = (unsigned)rec[24] | ((unsigned)rec[25] << 8);
    uint64_t vs = off + RECORD_HEADER + klen, ve = vs + vlen; /* < 2^35: no overflow */
    if (ve > hlen || rec[27] != REC_MAGIC || klen != (uint64_t)n || ((rec[26] ^ kf) & KF_STR) ||
        memcmp(rec + RECORD_HEADER, kb, (size_t)n) != 0 || mmx_xxh3_64(rec + 8, (size_t)(ve - off - 8), 0) != csum) {
        result = fallback(); /* a racing writer or damage: the pure path retries and decides */
        goto done;
    }
    if (exp && exp <= clock_ns(CLOCK_REALTIME)) {
        if (count(local, 1) < 0) goto done;
        Py_INCREF(dflt);
        result = dflt;
        goto done;
    }
    if (rb.obj != NULL) {
        /* The racy, lock-free u64 store the pure path makes (see _layout's
         * roster): only into a writable map, only inside it, 8-aligned. */
        uint64_t at = rec_base + i;
        if ((uint64_t)rb.len / 8 > at && ((uintptr_t)rb.buf & 7) == 0) ((uint64_t *)rb.buf)[at] = now;
        PyBuffer_Release(&rb);
        rb.obj = NULL;
    }
    PyObject *value;
    if (view_min && vlen >= view_min) /* a memoryview of the mapped record, as _get_view's */
        value = PySequence_GetSlice(PyList_GET_ITEM(views, seg), (Py_ssize_t)vs, (Py_ssize_t)ve);
    else
        value = PyBytes_FromStringAndSize((const char *)heap + vs, (Py_ssize_t)vlen);
    if (value == NULL) goto done;
    if (count(local, 0) < 0) {
        Py_DECREF(value);
        goto done;
    }
    if (with_flags) {
        PyObject *f = PyLong_FromUnsignedLong(flags);
        result = f ? PyTuple_Pack(2, value, f) : NULL;
        Py_XDECREF(f);
        Py_DECREF(value);
    } else {
        result = value;
    }
done:
    if (rb.obj != NULL) PyBuffer_Release(&rb);
    if (hb.obj != NULL) PyBuffer_Release(&hb);
    PyBuffer_Release(&ib);
    return result;
}

static PyObject *native_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "get() takes 9 arguments");
        return NULL;
    }
    long key_size = PyLong_AsLong(args[3]);
    int track = PyObject_IsTrue(args[4]);
    int with_flags = PyObject_IsTrue(args[8]);
    long long next_check = PyLong_AsLongLong(args[5]);
    if (PyErr_Occurred() || track < 0 || with_flags < 0) return fallback();
    return do_get(args[0], args[1], args[2], key_size, track, next_check, args[6], args[7], with_flags, 0);
}

/* ------------------------------------------------------------------ Getter
 * Getter(handle, view_min=0): what MmapCache installs as its `get` (and,
 * with view_min=VIEW_MIN, as `_get_view`: a value of at least view_min
 * bytes comes back as a memoryview of the mapped record, sound for as long
 * as it is held: records are immutable within a generation and maps are
 * never closed, only dropped):
 * get(key, default=None, *, with_flags=False), called without a Python
 * frame. Each call reads handle._s, then s.gen, s.next_check, s.local,
 * gen.hot and gen.heap.views (nothing is cached across calls: a closed
 * handle keeps no map alive); what do_get does not answer goes to
 * handle._get_probe, the pure path.
 * It holds the handle (a reference cycle through the handle's __dict__),
 * hence the GC support. */
typedef struct {
    PyObject_HEAD
    PyObject *handle;
    long key_size;
    int track;
    uint64_t view_min; /* values this long come back as memoryviews (0: never) */
    vectorcallfunc vectorcall;
} Getter;

static PyObject *S_s, *S_gen, *S_next_check, *S_local, *S_hot, *S_heap, *S_views, *S_get_probe,
    *S_key_size, *S_opts, *S_track_recency, *S_with_flags, *S_default, *S_key;

static PyObject *getter_probe(Getter *g, PyObject *key, PyObject *dflt, int with_flags) {
    return PyObject_CallMethodObjArgs(g->handle, S_get_probe, key, dflt, with_flags ? Py_True : Py_False, NULL);
}

static PyObject *getter_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Getter *g = (Getter *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *key = nargs > 0 ? args[0] : NULL, *dflt = nargs > 1 ? args[1] : NULL;
    int with_flags = 0;
    if (nargs > 2) goto usage;
    if (kwnames != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, i), *v = args[nargs + i];
            if (name == S_with_flags || PyUnicode_Compare(name, S_with_flags) == 0) {
                if ((with_flags = PyObject_IsTrue(v)) < 0) return NULL;
            } else if ((name == S_default || PyUnicode_Compare(name, S_default) == 0) && dflt == NULL) {
                dflt = v;
            } else if ((name == S_key || PyUnicode_Compare(name, S_key) == 0) && key == NULL) {
                key = v;
            } else {
                goto usage;
            }
        }
    }
    if (key == NULL) goto usage;
    if (dflt == NULL) dflt = Py_None;
    PyObject *s = PyObject_GetAttr(g->handle, S_s);
    if (s == NULL) return NULL;
    if (s == Py_None) {
        Py_DECREF(s);
        return getter_probe(g, key, dflt, with_flags); /* raises ClosedCacheError */
    }
    PyObject *gen = PyObject_GetAttr(s, S_gen);
    PyObject *nc = PyObject_GetAttr(s, S_next_check);
    PyObject *local = PyObject_GetAttr(s, S_local);
    Py_DECREF(s);
    PyObject *r = NULL, *views = NULL, *hot = NULL, *heap = NULL;
    if (gen == NULL || nc == NULL || local == NULL) goto out;
    if ((hot = PyObject_GetAttr(gen, S_hot)) == NULL || (heap = PyObject_GetAttr(gen, S_heap)) == NULL ||
        (views = PyObject_GetAttr(heap, S_views)) == NULL)
        goto out;
    long long next_check = PyLong_AsLongLong(nc);
    if (next_check == -1 && PyErr_Occurred()) PyErr_Clear();
    r = do_get(hot, views, key, g->key_size, g->track, next_check, local, dflt, with_flags, g->view_min);
    if (r == FALLBACK) {
        Py_DECREF(r);
        r = getter_probe(g, key, dflt, with_flags);
    }
out:
    Py_XDECREF(views);
    Py_XDECREF(heap);
    Py_XDECREF(hot);
    Py_XDECREF(gen);
    Py_XDECREF(nc);
    Py_XDECREF(local);
    return r;
usage:
    PyErr_SetString(PyExc_TypeError, "get(key, default=None, *, with_flags=False)");
    return NULL;
}

static PyObject *getter_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *handle;
    Py_ssize_t view_min = 0;
    static char *kwlist[] = {"handle", "view_min", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|n", kwlist, &handle, &view_min)) return NULL;
    if (view_min < 0) {
        PyErr_SetString(PyExc_ValueError, "view_min must be >= 0");
        return NULL;
    }
    PyObject *ks = PyObject_GetAttr(handle, S_key_size);
    if (ks == NULL) return NULL;
    long key_size = PyLong_AsLong(ks);
    Py_DECREF(ks);
    /* the policy lives in the handle's frozen options (_core/options.py) */
    PyObject *opts = PyObject_GetAttr(handle, S_opts);
    if (opts == NULL) return NULL;
    PyObject *tr = PyObject_GetAttr(opts, S_track_recency);
    Py_DECREF(opts);
    if (tr == NULL) return NULL;
    int track = PyObject_IsTrue(tr);
    Py_DECREF(tr);
    if ((key_size == -1 || track < 0) && PyErr_Occurred()) return NULL;
    Getter *g = (Getter *)type->tp_alloc(type, 0);
    if (g == NULL) return NULL;
    Py_INCREF(handle);
    g->handle = handle;
    g->key_size = key_size;
    g->track = track;
    g->view_min = (uint64_t)view_min;
    g->vectorcall = getter_call;
    return (PyObject *)g;
}

static int getter_traverse(Getter *g, visitproc visit, void *arg) {
    Py_VISIT(g->handle);
    return 0;
}

static int getter_clear(Getter *g) {
    Py_CLEAR(g->handle);
    return 0;
}

static void getter_dealloc(Getter *g) {
    PyObject_GC_UnTrack(g);
    getter_clear(g);
    Py_TYPE(g)->tp_free((PyObject *)g);
}

static PyTypeObject GetterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mmcache._native._speedups.Getter",
    .tp_basicsize = sizeof(Getter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Getter(handle): MmapCache.get through the compiled path.",
    .tp_new = getter_new,
    .tp_traverse = (traverseproc)getter_traverse,
    .tp_clear = (inquiry)getter_clear,
    .tp_dealloc = (destructor)getter_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Getter, vectorcall),
};

static PyObject *native_xxh3_64(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer b;
    unsigned long long seed = 0;
    if (!PyArg_ParseTuple(args, "y*|K", &b, &seed)) return NULL;
    uint64_t h = mmx_xxh3_64(b.buf, (size_t)b.len, seed);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLongLong(h);
}

static PyMethodDef methods[] = {
    {"get", (PyCFunction)(void (*)(void))native_get, METH_FASTCALL, "MmapCache's get for one key (see the C source)."},
    {"xxh3_64", native_xxh3_64, METH_VARARGS, "xxh3_64(data, seed=0) -> int: XXH3 64-bit hash."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", "mmcache's compiled get path.", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__speedups(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    FALLBACK = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (FALLBACK == NULL || PyModule_AddObjectRef(m, "FALLBACK", FALLBACK) < 0) goto fail;
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) goto fail
    INTERN(S_s, "_s");
    INTERN(S_gen, "gen");
    INTERN(S_next_check, "next_check");
    INTERN(S_local, "local");
    INTERN(S_hot, "hot");
    INTERN(S_heap, "heap");
    INTERN(S_views, "views");
    INTERN(S_get_probe, "_get_probe");
    INTERN(S_key_size, "_key_size");
    INTERN(S_opts, "_opts");
    INTERN(S_track_recency, "track_recency");
    INTERN(S_with_flags, "with_flags");
    INTERN(S_default, "default");
    INTERN(S_key, "key");
    if (PyType_Ready(&GetterType) < 0 || PyModule_AddObjectRef(m, "Getter", (PyObject *)&GetterType) < 0)
        goto fail;
    if (mmx_write_init(m) < 0) goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
