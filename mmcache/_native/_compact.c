/* mmcache._native._speedups, compaction: move_records, the loop of
 * HeapCopier._move (mmcache/_core/builders.py) in C.
 *
 * A compaction copies each live slot's record from the old heap into the
 * new generation's and points the slot at the copy; done record by record in
 * Python it cost ~1.3 us a record, as much again as a put, amortised, on a
 * table of overwrites. Here the loop runs over a batch of slots and stops at
 * the first one it does not handle the usual way, returning its index: the
 * pure loop (the reference) then does that one slot (remap a segment, roll
 * the destination over to a new segment, or mark the copy failed) and the
 * caller goes on. Nothing here is decided differently from the pure loop.
 *
 * Files are untrusted: the slot array, each record and the destination are
 * checked against their maps before any byte is read or written. */
#include "_write_int.h" /* (Python.h first) */

#include "format.h"

#define MOVE_BATCH 4096 /* slots per call: the GIL is let go between calls */

/* move_records(nm, slots, start, key_size, slot_size, views, dst, dst_lim,
 * dst_seg, tail) -> (stop, tail, written, held): for slots[start:] (a list of
 * 1-based slot numbers), at most MOVE_BATCH of them, each OCCUPIED slot of
 * the new index `nm`: the record its location names in `views` (the old
 * heap's segment views), its length the slot's record length, copied to
 * `dst` (the new heap's segment `dst_seg`) at `tail`, and the slot pointed
 * at the copy. stop: the index of the first slot not done (its segment not
 * mapped here or the record past our map of it, no recorded length, an
 * offset inside the segment header, a wrong magic byte, no room before
 * dst_lim: held is then True), or where the batch ended (held False);
 * written: bytes copied. */
static PyObject *move_records(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 10 || !PyList_CheckExact(args[1]) || !PyList_CheckExact(args[5])) {
        PyErr_SetString(PyExc_TypeError,
                        "move_records(nm, slots: list, start, key_size, slot_size, views: list, dst, dst_lim, "
                        "dst_seg, tail)");
        return NULL;
    }
    PyObject *slots = args[1], *views = args[5];
    Py_ssize_t start = PyLong_AsSsize_t(args[2]);
    uint64_t K = PyLong_AsUnsignedLongLong(args[3]), ss = PyLong_AsUnsignedLongLong(args[4]);
    uint64_t dlim = PyLong_AsUnsignedLongLong(args[7]), dseg = PyLong_AsUnsignedLongLong(args[8]);
    uint64_t tail = PyLong_AsUnsignedLongLong(args[9]);
    if (PyErr_Occurred()) return NULL;
    if (start < 0 || K < MMF_MIN_KEY_SIZE || K > MMF_MAX_KEY_SIZE || ss < K + SLOT_FIXED || ss > MMF_MAX_SLOT_SIZE ||
        dseg > 0xFFFFFFFFULL) {
        PyErr_SetString(PyExc_ValueError, "move_records: a geometry out of range");
        return NULL;
    }
    Py_buffer nb, db, sb = {0};
    if (PyObject_GetBuffer(args[0], &nb, PyBUF_WRITABLE) < 0) return NULL;
    if (PyObject_GetBuffer(args[6], &db, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&nb);
        return NULL;
    }
    uint8_t *nm = (uint8_t *)nb.buf, *dst = (uint8_t *)db.buf;
    const uint64_t nslots = (uint64_t)nb.len < HB ? 0 : ((uint64_t)nb.len - HB) / ss; /* slots inside the map */
    if (dlim > (uint64_t)db.len) dlim = (uint64_t)db.len;
    const Py_ssize_t n = PyList_GET_SIZE(slots);
    const Py_ssize_t end = n - start > MOVE_BATCH ? start + MOVE_BATCH : n;
    uint64_t sseg = UINT64_MAX, slim = 0, written = 0;
    const uint8_t *src = NULL;
    Py_ssize_t i = start;
    int held = 1;
    for (;; i++) {
        if (i == end) {
            held = 0;
            break;
        }
        uint64_t slot = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(slots, i));
        if (PyErr_Occurred()) {
            PyErr_Clear();
            break; /* the pure loop raises what it raises */
        }
        if (slot < 1 || slot > nslots) break;
        uint8_t *sp = nm + HB + (slot - 1) * ss, *loc = sp + K;
        if (loc[0] != ST_OCCUPIED) continue;
        uint64_t seg = mmx_le32(loc + 8), off = mmx_le32(loc + 12), size = mmx_le32(loc + 24);
        if (seg != sseg) {
            if (sb.obj != NULL) PyBuffer_Release(&sb);
            sb.obj = NULL;
            sseg = UINT64_MAX;
            PyObject *v = seg < (uint64_t)PyList_GET_SIZE(views) ? PyList_GET_ITEM(views, (Py_ssize_t)seg) : NULL;
            if (v == NULL || !PyMemoryView_Check(v) || PyObject_GetBuffer(v, &sb, PyBUF_SIMPLE) < 0) {
                PyErr_Clear();
                sb.obj = NULL;
                break; /* not mapped here: the pure loop maps it */
            }
            sseg = seg;
            src = (const uint8_t *)sb.buf;
            slim = (uint64_t)sb.len;
        }
        /* off, size < 2^32: no overflow in the sums */
        if (!size || off < SEG_HB || off + size > slim || src[off + MMF_REC_MAGIC_AT] != MMF_REC_MAGIC) break;
        if (tail > dlim || dlim - tail < size) break; /* the destination rolls over: the pure loop */
        memcpy(dst + tail, src + off, (size_t)size);
        put32(loc + 8, (uint32_t)dseg);
        put32(loc + 12, (uint32_t)tail);
        tail += size;
        written += size;
    }
    if (sb.obj != NULL) PyBuffer_Release(&sb);
    PyBuffer_Release(&db);
    PyBuffer_Release(&nb);
    return Py_BuildValue("(nKKO)", i, (unsigned long long)tail, (unsigned long long)written,
                         held ? Py_True : Py_False);
}

static PyMethodDef compact_methods[] = {
    {"move_records", (PyCFunction)(void (*)(void))move_records, METH_FASTCALL,
     "HeapCopier._move's loop for a batch of slots (see the C source)."},
    {NULL, NULL, 0, NULL},
};

int mmx_compact_init(PyObject *m) { return PyModule_AddFunctions(m, compact_methods); }
