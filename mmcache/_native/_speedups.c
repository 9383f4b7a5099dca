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
static PyObject *native_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "get() takes 9 arguments");
        return NULL;
    }
    PyObject *hot = args[0], *views = args[1], *key = args[2], *local = args[6], *dflt = args[7];
    if (!PyTuple_CheckExact(hot) || PyTuple_GET_SIZE(hot) < 5 || !PyList_CheckExact(views)) return fallback();
    long key_size = PyLong_AsLong(args[3]);
    int track = PyObject_IsTrue(args[4]);
    int with_flags = PyObject_IsTrue(args[8]);
    long long next_check = PyLong_AsLongLong(args[5]);
    if (PyErr_Occurred() || track < 0 || with_flags < 0) return fallback();

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
    Py_buffer hb;
    hb.obj = NULL;
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
    if (track) {
        /* The racy, lock-free u64 store the pure path makes (see _layout's
         * roster): only into a writable map, only inside it, 8-aligned. */
        Py_buffer rb;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(hot, 4), &rb, PyBUF_WRITABLE) == 0) {
            uint64_t at = rec_base + i;
            if ((uint64_t)rb.len / 8 > at && ((uintptr_t)rb.buf & 7) == 0)
                ((uint64_t *)rb.buf)[at] = now;
            PyBuffer_Release(&rb);
        } else {
            PyErr_Clear();
        }
    }
    PyObject *value = PyBytes_FromStringAndSize((const char *)heap + vs, (Py_ssize_t)vlen);
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
    if (hb.obj != NULL) PyBuffer_Release(&hb);
    PyBuffer_Release(&ib);
    return result;
}

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
    if (FALLBACK == NULL || PyModule_AddObjectRef(m, "FALLBACK", FALLBACK) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
