/* The canonical argument encoding of the decorator's compiled key (key
 * scheme k2; mmcache/decorators/_encode.py is the reference, byte for byte)
 * into a growable buffer, and the buffer's 16-byte digest. Included by
 * _decorator.c only (static functions, like probe.h for _speedups.c): the
 * encoding is one concern, the KeyFn / Hit objects that use it another.
 *
 * encode() knows None, bool, int (64-bit), float, str, bytes, and tuples /
 * lists of them (exact types only); it returns 0 for anything else, which
 * the pure encoder decides. */
#ifndef MMCACHE_ARGENC_H
#define MMCACHE_ARGENC_H

#include <Python.h> /* (PY_SSIZE_T_CLEAN defined by the includer) */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "xxh3.h"

#define MAX_DEPTH 64 /* _encode._MAX_DEPTH */
#define STACK_BYTES 512

/* A growable byte buffer that starts on the caller's stack. */
typedef struct {
    char *p;
    Py_ssize_t len, cap;
    int heap;
} Buf;

static int put(Buf *b, const void *data, Py_ssize_t n) {
    if (n > PY_SSIZE_T_MAX / 2 - b->len) return -1;
    if (b->len + n > b->cap) {
        Py_ssize_t cap = b->cap * 2 > b->len + n ? b->cap * 2 : b->len + n;
        char *p = b->heap ? PyMem_Realloc(b->p, cap) : PyMem_Malloc(cap);
        if (p == NULL) return -1;
        if (!b->heap) memcpy(p, b->p, b->len);
        b->p = p;
        b->cap = cap;
        b->heap = 1;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

/* tag + a little-endian 64-bit field: the pure encoder's "<cq" / "<cQ" / "<cd" */
static int tagged64(Buf *b, char tag, uint64_t v) {
    unsigned char out[9];
    out[0] = (unsigned char)tag;
    for (int i = 0; i < 8; i++) out[1 + i] = (unsigned char)(v >> (8 * i));
    return put(b, out, 9);
}

/* Each returns 1: encoded; 0: a value this code leaves to the pure path; -1: error (maybe unset: memory). */
static int encode(Buf *b, PyObject *v, int typed, int depth);

static int encode_items(Buf *b, PyObject *seq, char tag, int typed, int depth) {
    if (depth >= MAX_DEPTH) return 0; /* _check_depth raises there: the pure path says so */
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    if (tagged64(b, tag, (uint64_t)n) < 0) return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        int r = encode(b, items[i], typed, depth + 1);
        if (r <= 0) return r;
    }
    return 1;
}

static int encode_float(Buf *b, double d, int typed) {
    if (isnan(d)) return put(b, "f\0\0\0\0\0\0\xf8\x7f", 9) < 0 ? -1 : 1; /* _NAN: every NaN is one */
    if (!typed && isfinite(d) && d == floor(d)) {
        /* untyped, an integral float keys as the int equal to it (-0.0 as 0) */
        if (d >= -9223372036854775808.0 && d < 9223372036854775808.0)
            return tagged64(b, 'i', (uint64_t)(long long)d) < 0 ? -1 : 1;
        return 0; /* an integer past 64 bits: the pure path's "I" form */
    }
    uint64_t bits;
    memcpy(&bits, &d, 8);
    return tagged64(b, 'f', bits) < 0 ? -1 : 1;
}

static int encode(Buf *b, PyObject *v, int typed, int depth) {
    PyTypeObject *t = Py_TYPE(v);
    if (v == Py_None) return put(b, "N", 1) < 0 ? -1 : 1;
    if (t == &PyBool_Type) {
        if (typed) return put(b, v == Py_True ? "T" : "F", 1) < 0 ? -1 : 1;
        return tagged64(b, 'i', v == Py_True) < 0 ? -1 : 1;
    }
    if (t == &PyLong_Type) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) return 0; /* past 64 bits: the pure path's "I" form */
        if (x == -1 && PyErr_Occurred()) return -1;
        return tagged64(b, 'i', (uint64_t)x) < 0 ? -1 : 1;
    }
    if (t == &PyFloat_Type) return encode_float(b, PyFloat_AS_DOUBLE(v), typed);
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (s == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return -1;
            PyErr_Clear(); /* lone surrogates: the pure path's surrogatepass */
            return 0;
        }
        return tagged64(b, 's', (uint64_t)n) < 0 || put(b, s, n) < 0 ? -1 : 1;
    }
    if (t == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(v);
        return tagged64(b, 'b', (uint64_t)n) < 0 || put(b, PyBytes_AS_STRING(v), n) < 0 ? -1 : 1;
    }
    if (t == &PyTuple_Type) return encode_items(b, v, '(', typed, depth);
    if (t == &PyList_Type) return encode_items(b, v, typed ? '[' : '(', typed, depth);
    return 0;
}

/* xxh3_128_digest's 16 bytes (big-endian high half, then low), for 17 .. 240 bytes. */
static PyObject *digest128(const uint8_t *data, size_t n) {
    mmx_u128 h = mmx_xxh3_128_mid(data, n, 0);
    uint8_t out[16];
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(h.hi >> (56 - 8 * i));
        out[8 + i] = (uint8_t)(h.lo >> (56 - 8 * i));
    }
    return PyBytes_FromStringAndSize((const char *)out, 16);
}

/* The key of an encoding that ended with r: the buffer's digest for r == 1
 * (ours for 17 .. 240 bytes, else digest(bytes)); NULL with an error set
 * for r < 0 (MemoryError if none is). Frees the buffer. */
static PyObject *finish(Buf *b, int r, PyObject *digest) {
    PyObject *out = NULL;
    if (r > 0 && b->len >= 17 && b->len <= 240) {
        out = digest128((const uint8_t *)b->p, (size_t)b->len); /* our own: no bytes object, no call */
    } else if (r > 0) {
        PyObject *data = PyBytes_FromStringAndSize(b->p, b->len);
        if (data != NULL) {
            out = PyObject_CallOneArg(digest, data);
            Py_DECREF(data);
        }
    } else if (!PyErr_Occurred()) {
        PyErr_NoMemory();
    }
    if (b->heap) PyMem_Free(b->p);
    return out;
}

#endif
