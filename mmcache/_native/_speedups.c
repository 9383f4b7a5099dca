/* mmcache._native._speedups: the compiled get of MmapCache (see
 * mmcache/_native/__init__.py for the glue, format.h and docs/FORMAT.md for
 * the bytes, docs/NATIVE.md for what is native and why).
 *
 * Table: one per SharedTable (a process's share of one table). It holds
 * what a get reads, bound by the Python side whenever that changes (a
 * generation switch, close): exports (pins) of the index map and of the
 * roster's u64 view, the heap's list of segment views with an export of
 * each segment used so far, the geometry, the next staleness check and the
 * hit / miss counts, all as C fields. Getter: a handle's `get` (and
 * `_get_view`), calling the Table's probe with no Python attribute read.
 *
 * The probe (probe.h) does what MmapCache._get_probe does for a key that
 * fits in a slot: hash, linear probe over the index, record checks (magic,
 * key, STR flag, xxh3_64 checksum), expiry, the LRU stamp, the copy of the
 * value.
 * Files are untrusted: every offset and length read from a map is checked
 * against that map's size (format.h). On anything unusual (a retired index,
 * a due staleness check, a record that does not check out, a segment not
 * mapped or mapped shorter than the record, a key it does not handle) it
 * answers FALLBACK and the Getter calls handle._get_probe, the pure path,
 * which is the reference: it refreshes, remaps, rebinds and decides.
 *
 * Memory safety of the maps: a Table holds a buffer export of every map it
 * points into, so the map cannot be closed (mmap.close() and
 * memoryview.release() raise BufferError while exports exist) nor freed
 * while it reads; bind/unbind release them. The GIL is held throughout
 * (a call is well under a microsecond). Not built for free-threaded CPython.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

#include "_write.h" /* Putter: the put (_write.c) */
#include "probe.h"
#include "fuzz_stubs.h" /* make fuzz-native only */

/* get(hot, views, key, key_size, track, next_check, local, default, with_flags):
 * one get on explicit buffers, for tests and the fuzzer (a binding made
 * for the call): hot is Generation.hot's shape (idx, nslots, slot_size,
 * rec_base, recency, maps); hits / misses are added to local[0] / local[1]. */
static PyObject *native_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "get() takes 9 arguments");
        return NULL;
    }
    PyObject *hot = args[0], *local = args[6];
    if (!PyTuple_CheckExact(hot) || PyTuple_GET_SIZE(hot) < 5 || !PyList_CheckExact(local) ||
        PyList_GET_SIZE(local) < 2) {
        PyErr_SetString(PyExc_TypeError, "get(): hot must be a tuple of 5+, local a list of 2+");
        return NULL;
    }
    unsigned long long nslots = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(hot, 1));
    unsigned long long ss = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(hot, 2));
    unsigned long long rec_base = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(hot, 3));
    long key_size = PyLong_AsLong(args[3]);
    long long next_check = PyLong_AsLongLong(args[5]);
    int track = PyObject_IsTrue(args[4]), with_flags = PyObject_IsTrue(args[8]);
    if (PyErr_Occurred() || track < 0 || with_flags < 0 || key_size < 0) return fallback();
    binding b;
    memset(&b, 0, sizeof b);
    if (binding_bind(&b, PyTuple_GET_ITEM(hot, 0), nslots, ss, (unsigned long long)key_size, rec_base,
                     PyTuple_GET_ITEM(hot, 4), args[1]) < 0) {
        binding_release(&b);
        return fallback();
    }
    b.next_check = next_check;
    PyObject *r = probe(&b, args[2], (unsigned long long)key_size, track, args[7], with_flags, 0);
    for (int i = 0; i < 2 && r != NULL; i++) {
        unsigned long long c = i ? b.misses : b.hits;
        if (c == 0) continue;
        PyObject *add = PyLong_FromUnsignedLongLong(c);
        PyObject *sum = add ? PyNumber_Add(PyList_GET_ITEM(local, i), add) : NULL;
        Py_XDECREF(add);
        if (sum == NULL || PyList_SetItem(local, i, sum) < 0) Py_CLEAR(r); /* (SetItem steals sum) */
    }
    binding_release(&b);
    return r;
}

/* ------------------------------------------------------------------- Table */
typedef struct {
    PyObject_HEAD
    binding b;
} Table;

static PyObject *table_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Table() takes no arguments");
        return NULL;
    }
    Table *t = (Table *)type->tp_alloc(type, 0); /* zeroed: unbound */
    return (PyObject *)t;
}

static void table_dealloc(Table *t) {
    binding_release(&t->b);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyObject *table_bind(Table *t, PyObject *args) {
    PyObject *idx, *recency, *views;
    unsigned long long nslots, ss, ks, rec_base;
    if (!PyArg_ParseTuple(args, "OKKKKOO:bind", &idx, &nslots, &ss, &ks, &rec_base, &recency, &views)) return NULL;
    if (binding_bind(&t->b, idx, nslots, ss, ks, rec_base, recency, views) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *table_unbind(Table *t, PyObject *unused) {
    (void)unused;
    binding_release(&t->b);
    Py_RETURN_NONE;
}

static PyObject *table_take_counts(Table *t, PyObject *unused) {
    (void)unused;
    unsigned long long h = t->b.hits, m = t->b.misses;
    t->b.hits = t->b.misses = 0;
    return Py_BuildValue("(KK)", h, m);
}

static PyObject *table_bound(Table *t, void *closure) {
    (void)closure;
    return PyBool_FromLong(t->b.bound);
}

static PyMethodDef table_methods[] = {
    {"bind", (PyCFunction)table_bind, METH_VARARGS,
     "bind(idx, nslots, slot_size, key_size, rec_base, recency, views): point at one generation's maps."},
    {"unbind", (PyCFunction)table_unbind, METH_NOARGS, "Release every map: each get falls back."},
    {"take_counts", (PyCFunction)table_take_counts, METH_NOARGS, "(hits, misses) since the last take; zeroes them."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef table_members[] = {
    {"next_check", T_LONGLONG, offsetof(Table, b.next_check), 0, "monotonic ns of the next staleness check"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef table_getset[] = {
    {"bound", (getter)table_bound, NULL, "Does it answer gets (maps bound, geometry sane)?", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mmcache._native._speedups.Table",
    .tp_basicsize = sizeof(Table),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Table(): a process's compiled view of one table (see the C source).",
    .tp_new = table_new,
    .tp_dealloc = (destructor)table_dealloc,
    .tp_methods = table_methods,
    .tp_members = table_members,
    .tp_getset = table_getset,
};

/* ------------------------------------------------------------------ Getter
 * Getter(handle, table, view_min=0): what MmapCache installs as its `get`
 * (and, with view_min=VIEW_MIN, as `_get_view`: a value of at least
 * view_min bytes comes back as a memoryview of the mapped record, sound for
 * as long as it is held: records are immutable within a generation and
 * maps are never closed, only dropped):
 * get(key, default=None, *, with_flags=False), called without a Python
 * frame: the Table's probe, and handle._get_probe (the pure path) for what
 * it does not answer. detach() (at the handle's close) drops the Table:
 * every call then goes to _get_probe, which raises ClosedCacheError.
 * It holds the handle (a reference cycle through the handle's __dict__),
 * hence the GC support. */
typedef struct {
    PyObject_HEAD
    PyObject *handle;
    Table *table; /* NULL once detached */
    unsigned long long key_size;
    int track;
    uint64_t view_min; /* values this long come back as memoryviews (0: never) */
    vectorcallfunc vectorcall;
} Getter;

static PyObject *S_get_probe, *S_key_size, *S_opts, *S_track_recency, *S_with_flags, *S_default, *S_key;

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
    Table *t = g->table;
    PyObject *r = FALLBACK;
    if (t != NULL) {
        Py_INCREF(t); /* a detach() run by code the probe triggers must not free it under us */
        r = probe(&t->b, key, g->key_size, g->track, dflt, with_flags, g->view_min);
        Py_DECREF(t);
        if (r != FALLBACK) return r;
        Py_DECREF(r);
    }
    return PyObject_CallMethodObjArgs(g->handle, S_get_probe, key, dflt, with_flags ? Py_True : Py_False, NULL);
usage:
    PyErr_SetString(PyExc_TypeError, "get(key, default=None, *, with_flags=False)");
    return NULL;
}

static PyObject *getter_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *handle, *table;
    Py_ssize_t view_min = 0;
    static char *kwlist[] = {"handle", "table", "view_min", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!|n", kwlist, &handle, &TableType, &table, &view_min))
        return NULL;
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
    Py_INCREF(table);
    g->table = (Table *)table;
    g->key_size = key_size < 0 ? 0 : (unsigned long long)key_size;
    g->track = track;
    g->view_min = (uint64_t)view_min;
    g->vectorcall = getter_call;
    return (PyObject *)g;
}

static PyObject *getter_detach(Getter *g, PyObject *unused) {
    (void)unused;
    Py_CLEAR(g->table);
    Py_RETURN_NONE;
}

static int getter_traverse(Getter *g, visitproc visit, void *arg) {
    Py_VISIT(g->handle);
    return 0;
}

static int getter_clear(Getter *g) {
    Py_CLEAR(g->handle);
    Py_CLEAR(g->table);
    return 0;
}

static void getter_dealloc(Getter *g) {
    PyObject_GC_UnTrack(g);
    getter_clear(g);
    Py_TYPE(g)->tp_free((PyObject *)g);
}

static PyMethodDef getter_methods[] = {
    {"detach", (PyCFunction)getter_detach, METH_NOARGS, "Drop the Table: every call goes to the pure path."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject GetterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mmcache._native._speedups.Getter",
    .tp_basicsize = sizeof(Getter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Getter(handle, table, view_min=0): MmapCache.get through the compiled path.",
    .tp_new = getter_new,
    .tp_traverse = (traverseproc)getter_traverse,
    .tp_clear = (inquiry)getter_clear,
    .tp_dealloc = (destructor)getter_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Getter, vectorcall),
    .tp_methods = getter_methods,
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
    struct timespec res;
    if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0)
        COARSE_SLACK = 2 * ((uint64_t)res.tv_sec * 1000000000ULL + (uint64_t)res.tv_nsec) + 1000000;
    FALLBACK = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (FALLBACK == NULL || PyModule_AddObjectRef(m, "FALLBACK", FALLBACK) < 0) goto fail;
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) goto fail
    INTERN(S_get_probe, "_get_probe");
    INTERN(S_key_size, "_key_size");
    INTERN(S_opts, "_opts");
    INTERN(S_track_recency, "track_recency");
    INTERN(S_with_flags, "with_flags");
    INTERN(S_default, "default");
    INTERN(S_key, "key");
    if (PyType_Ready(&TableType) < 0 || PyModule_AddObjectRef(m, "Table", (PyObject *)&TableType) < 0 ||
        PyType_Ready(&GetterType) < 0 || PyModule_AddObjectRef(m, "Getter", (PyObject *)&GetterType) < 0)
        goto fail;
    if (mmx_write_init(m) < 0 || mmx_compact_init(m) < 0) goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
