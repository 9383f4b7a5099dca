/* mmcache._native._decorator: the decorator's hit path, compiled.
 *
 * Hit(keyfn, loads, stats, miss, slow) is what @mmap_cached returns for a
 * plain (sync, no stale_ttl) function: a function-like object (a __dict__
 * for functools.update_wrapper's attributes, bound as a method by __get__,
 * pickled by reference) whose call, once the table is open (`get` set), is
 * the hit path of mmcache/decorators/cached.py's wrapper without its frame:
 * key, get(key, miss), loads, stats[0] += 1. Anything else (the table not
 * open yet, a call shape or argument KeyFn leaves to the pure binder, a
 * miss, a value that does not unpickle) is slow(*args, **kwargs), that
 * wrapper, which does it all again and decides.
 *
 * KeyFn(prefix, n, typed, digest, fallback) is the `key(args, kwargs)` of an
 * ArgKeyer (mmcache/decorators/_argkey.py) for a function whose n parameters
 * are all given by position and none is ignored: it writes the prefix and
 * each argument's canonical encoding (argenc.h; mmcache/decorators/_encode.py
 * is the reference, key scheme k2) into one buffer and returns the 16-byte
 * xxh3_128 of it: our own (xxh3.h) for the common 17 .. 240 bytes, checked
 * against the `xxhash` package in the tests; digest(buffer), the package's,
 * otherwise. The bytes are the pure encoder's, byte for byte, for the types
 * it knows: None, bool, int (64-bit), float, str, bytes, and tuples / lists
 * of them. Anything else (another call shape, a type it does not know or a
 * subclass, an int past 64 bits, a float whose integer value is, a str with
 * lone surrogates, nesting 64 deep) goes to fallback(args, kwargs), the pure
 * path, which decides (and raises the TypeError naming the argument where
 * there is one): this code never guesses.
 *
 * The GIL is held throughout and no Python code runs while the arguments are
 * read (exact built-in types only), so nothing changes under the encoder.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "argenc.h"     /* Buf, encode, finish: the encoding itself */
#include "fuzz_stubs.h" /* make fuzz-native only */

typedef struct {
    PyObject_HEAD
    PyObject *prefix;   /* bytes: ArgKeyer._prefix */
    PyObject *digest;   /* bytes -> the 16-byte key */
    PyObject *fallback; /* (args, kwargs) -> the key, the pure path */
    Py_ssize_t n;
    int typed;
    vectorcallfunc vectorcall;
} KeyFn;

/* The key of the positional arguments args[0..k->n); NULL without an error set:
 * an argument the pure binder decides. */
static PyObject *key_of(KeyFn *k, PyObject *const *args) {
    char stack[STACK_BYTES];
    Buf b = {stack, 0, STACK_BYTES, 0};
    int r = put(&b, PyBytes_AS_STRING(k->prefix), PyBytes_GET_SIZE(k->prefix)) < 0 ? -1 : 1;
    for (Py_ssize_t i = 0; r > 0 && i < k->n; i++) r = encode(&b, args[i], k->typed, 0);
    if (r != 0) return finish(&b, r, k->digest);
    if (b.heap) PyMem_Free(b.p);
    return NULL;
}

static PyObject *keyfn_call(PyObject *self, PyObject *const *argv, size_t nargsf, PyObject *kwnames) {
    KeyFn *k = (KeyFn *)self;
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "key(args, kwargs)");
        return NULL;
    }
    PyObject *args = argv[0], *kwargs = argv[1];
    if (PyTuple_CheckExact(args) && PyTuple_GET_SIZE(args) == k->n && PyDict_CheckExact(kwargs) &&
        PyDict_GET_SIZE(kwargs) == 0) {
        PyObject *key = key_of(k, &PyTuple_GET_ITEM(args, 0));
        if (key != NULL || PyErr_Occurred()) return key;
    }
    return PyObject_Vectorcall(k->fallback, argv, 2, NULL);
}

static PyObject *keyfn_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *prefix, *digest, *fallback;
    Py_ssize_t n;
    int typed;
    static char *kwlist[] = {"prefix", "n", "typed", "digest", "fallback", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!npOO", kwlist, &PyBytes_Type, &prefix, &n, &typed, &digest,
                                     &fallback))
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "n must be >= 0");
        return NULL;
    }
    if (!PyCallable_Check(digest) || !PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "digest and fallback must be callable");
        return NULL;
    }
    KeyFn *k = (KeyFn *)type->tp_alloc(type, 0);
    if (k == NULL) return NULL;
    k->prefix = Py_NewRef(prefix);
    k->digest = Py_NewRef(digest);
    k->fallback = Py_NewRef(fallback);
    k->n = n;
    k->typed = typed;
    k->vectorcall = keyfn_call;
    return (PyObject *)k;
}

/* The fallback is a bound method of the ArgKeyer that holds this object: a cycle, hence GC support. */
static int keyfn_traverse(KeyFn *k, visitproc visit, void *arg) {
    Py_VISIT(k->prefix);
    Py_VISIT(k->digest);
    Py_VISIT(k->fallback);
    return 0;
}

static int keyfn_clear(KeyFn *k) {
    Py_CLEAR(k->prefix);
    Py_CLEAR(k->digest);
    Py_CLEAR(k->fallback);
    return 0;
}

static void keyfn_dealloc(KeyFn *k) {
    PyObject_GC_UnTrack(k);
    keyfn_clear(k);
    Py_TYPE(k)->tp_free((PyObject *)k);
}

static PyTypeObject KeyFnType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mmcache._native._decorator.KeyFn",
    .tp_basicsize = sizeof(KeyFn),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "KeyFn(prefix, n, typed, digest, fallback): an ArgKeyer's key(args, kwargs), compiled.",
    .tp_new = keyfn_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(KeyFn, vectorcall),
    .tp_traverse = (traverseproc)keyfn_traverse,
    .tp_clear = (inquiry)keyfn_clear,
    .tp_dealloc = (destructor)keyfn_dealloc,
};


typedef struct {
    PyObject_HEAD
    PyObject *keyfn;  /* the ArgKeyer's key(args, kwargs): a KeyFn is read directly */
    PyObject *get;    /* the table's get(key, default) once open; None before */
    PyObject *loads;  /* bytes-like -> the result */
    PyObject *stats;  /* list: [hits, misses, ...]; a hit adds 1 to stats[0] */
    PyObject *miss;   /* get's default: "not there" */
    PyObject *slow;   /* the Python wrapper: everything but a clean hit */
    PyObject *dict;   /* __dict__: update_wrapper's and the decorator's attributes */
    PyObject *weakrefs;
    vectorcallfunc vectorcall;
} Hit;

static int count_hit(PyObject *stats) {
    if (!PyList_CheckExact(stats) || PyList_GET_SIZE(stats) < 1) return 0;
    PyObject *one = PyLong_FromLong(1);
    if (one == NULL) return -1;
    PyObject *n = PyNumber_Add(PyList_GET_ITEM(stats, 0), one);
    Py_DECREF(one);
    if (n == NULL) return -1;
    return PyList_SetItem(stats, 0, n); /* steals n */
}

static PyObject *hit_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Hit *h = (Hit *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (h->get != Py_None && kwnames == NULL && Py_IS_TYPE(h->keyfn, &KeyFnType) &&
        nargs == ((KeyFn *)h->keyfn)->n) {
        PyObject *key = key_of((KeyFn *)h->keyfn, args);
        if (key == NULL) {
            if (PyErr_Occurred()) return NULL;
            goto slow;
        }
        PyObject *gargs[2] = {key, h->miss};
        PyObject *get = Py_NewRef(h->get); /* a rebind by the slow path cannot free it mid-call */
        PyObject *data = PyObject_Vectorcall(get, gargs, 2, NULL);
        Py_DECREF(get);
        Py_DECREF(key);
        if (data == NULL) return NULL; /* as the wrapper: the table's error (a closed table...) */
        if (data != h->miss) {
            PyObject *value = PyObject_CallOneArg(h->loads, data);
            Py_DECREF(data);
            if (value != NULL) {
                if (count_hit(h->stats) < 0) {
                    Py_DECREF(value);
                    return NULL;
                }
                return value;
            }
            PyErr_Clear(); /* unreadable now (a class renamed...): the wrapper recomputes */
        } else {
            Py_DECREF(data);
        }
    }
slow:
    return PyObject_Vectorcall(h->slow, args, nargsf, kwnames);
}

static PyObject *hit_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *keyfn, *loads, *stats, *miss, *slow;
    static char *kwlist[] = {"keyfn", "loads", "stats", "miss", "slow", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO!OO", kwlist, &keyfn, &loads, &PyList_Type, &stats, &miss,
                                     &slow))
        return NULL;
    if (!PyCallable_Check(keyfn) || !PyCallable_Check(loads) || !PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "keyfn, loads and slow must be callable");
        return NULL;
    }
    Hit *h = (Hit *)type->tp_alloc(type, 0);
    if (h == NULL) return NULL;
    h->keyfn = Py_NewRef(keyfn);
    h->get = Py_NewRef(Py_None);
    h->loads = Py_NewRef(loads);
    h->stats = Py_NewRef(stats);
    h->miss = Py_NewRef(miss);
    h->slow = Py_NewRef(slow);
    h->vectorcall = hit_call;
    return (PyObject *)h;
}

static int hit_traverse(Hit *h, visitproc visit, void *arg) {
    Py_VISIT(h->keyfn);
    Py_VISIT(h->get);
    Py_VISIT(h->loads);
    Py_VISIT(h->stats);
    Py_VISIT(h->miss);
    Py_VISIT(h->slow);
    Py_VISIT(h->dict);
    return 0;
}

static int hit_clear(Hit *h) {
    Py_CLEAR(h->keyfn);
    Py_CLEAR(h->get);
    Py_CLEAR(h->loads);
    Py_CLEAR(h->stats);
    Py_CLEAR(h->miss);
    Py_CLEAR(h->slow);
    Py_CLEAR(h->dict);
    return 0;
}

static void hit_dealloc(Hit *h) {
    PyObject_GC_UnTrack(h);
    if (h->weakrefs != NULL) PyObject_ClearWeakRefs((PyObject *)h);
    hit_clear(h);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

/* Bound as a function is: h.__get__(obj) is a method with obj first. */
static PyObject *hit_descr_get(PyObject *self, PyObject *obj, PyObject *Py_UNUSED(type)) {
    if (obj == NULL || obj == Py_None) return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static int hit_set_get(Hit *h, PyObject *value, void *Py_UNUSED(closure)) {
    if (value == NULL) value = Py_None;
    if (value != Py_None && !PyCallable_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "get must be callable or None");
        return -1;
    }
    Py_SETREF(h->get, Py_NewRef(value));
    return 0;
}

static PyObject *hit_get_get(Hit *h, void *Py_UNUSED(closure)) { return Py_NewRef(h->get); }

/* Pickled by reference, as a module-level function is: by its __qualname__. */
static PyObject *hit_reduce(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    return PyObject_GetAttrString(self, "__qualname__");
}

static PyObject *hit_repr(PyObject *self) {
    PyObject *name = PyObject_GetAttrString(self, "__qualname__");
    if (name == NULL) {
        PyErr_Clear();
        return PyUnicode_FromFormat("<mmap_cached function at %p>", self);
    }
    PyObject *r = PyUnicode_FromFormat("<mmap_cached function %S at %p>", name, self);
    Py_DECREF(name);
    return r;
}

static PyGetSetDef hit_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"get", (getter)hit_get_get, (setter)hit_set_get, "the table's get once open (None before)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef hit_methods[] = {
    {"__reduce__", hit_reduce, METH_NOARGS, "pickled by reference, by __qualname__"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HitType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mmcache._native._decorator.Hit",
    .tp_basicsize = sizeof(Hit),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = NULL, /* the decorated function's __doc__ goes in the instance's __dict__ */
    .tp_new = hit_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Hit, vectorcall),
    .tp_dictoffset = offsetof(Hit, dict),
    .tp_weaklistoffset = offsetof(Hit, weakrefs),
    .tp_descr_get = hit_descr_get,
    .tp_getset = hit_getset,
    .tp_methods = hit_methods,
    .tp_repr = hit_repr,
    .tp_traverse = (traverseproc)hit_traverse,
    .tp_clear = (inquiry)hit_clear,
    .tp_dealloc = (destructor)hit_dealloc,
};

/* encode(value, typed) -> the canonical bytes, or None where the pure encoder decides (for tests). */
static PyObject *native_encode(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *v;
    int typed;
    if (!PyArg_ParseTuple(args, "Op", &v, &typed)) return NULL;
    char stack[STACK_BYTES];
    Buf b = {stack, 0, STACK_BYTES, 0};
    int r = encode(&b, v, typed, 0);
    if (r == 0) {
        if (b.heap) PyMem_Free(b.p);
        Py_RETURN_NONE;
    }
    PyObject *out = r > 0 ? PyBytes_FromStringAndSize(b.p, b.len) : NULL;
    if (r < 0 && !PyErr_Occurred()) PyErr_NoMemory();
    if (b.heap) PyMem_Free(b.p);
    return out;
}

/* xxh3_128_mid(data) -> our xxh3_128 digest of 17 .. 240 bytes (for the tests against the package). */
static PyObject *native_xxh3_128(PyObject *Py_UNUSED(self), PyObject *arg) {
    Py_buffer v;
    if (PyObject_GetBuffer(arg, &v, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = NULL;
    if (v.len < 17 || v.len > 240)
        PyErr_SetString(PyExc_ValueError, "xxh3_128_mid takes 17 .. 240 bytes");
    else
        out = digest128((const uint8_t *)v.buf, (size_t)v.len);
    PyBuffer_Release(&v);
    return out;
}

static PyMethodDef methods[] = {
    {"xxh3_128_mid", native_xxh3_128, METH_O, "xxh3_128_mid(data) -> 16 bytes, for 17 .. 240 bytes."},
    {"encode", native_encode, METH_VARARGS, "encode(value, typed) -> bytes, or None: the pure encoder decides."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_decorator", "mmcache's compiled decorator hit.", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__decorator(void) {
    if (PyType_Ready(&KeyFnType) < 0 || PyType_Ready(&HitType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "KeyFn", (PyObject *)&KeyFnType) < 0 ||
        PyModule_AddObjectRef(m, "Hit", (PyObject *)&HitType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
