/* mmcache._native._speedups, rebuilds: move_records and build_records, the
 * loops of HeapCopier._move and Builder._copy (mmcache/_core/builders.py) in C.
 *
 * A compaction copies each live slot's record from the old heap into the
 * new generation's and points the slot at the copy (a full rebuild also
 * re-inserts the key); done record by record in Python it cost ~1.3 us a
 * record, as much again as a put, amortised, on a table of overwrites. Here
 * a loop runs over a batch of slots and stops at the first one it does not
 * handle the usual way, returning its index: the pure loop (the reference)
 * then does that one slot (remap a segment, roll the destination over to a
 * new segment, or give up on the copy) and the caller goes on. Nothing here
 * is decided differently from the pure loops.
 *
 * Files are untrusted: the slot array, each record and the destination are
 * checked against their maps before any byte is read or written. */
#include "_write_int.h" /* (Python.h first) */

#include "format.h"

#define MOVE_BATCH 4096 /* slots per call: the GIL is let go between calls */

/* Make *sb the export of views[seg] (a segment of the old heap) unless it
 * already is (*sseg == seg): 0, or -1 if that segment is not mapped here
 * (then nothing is held). */
static int source(PyObject *views, uint64_t seg, Py_buffer *sb, uint64_t *sseg) {
    if (seg == *sseg) return 0;
    if (sb->obj != NULL) PyBuffer_Release(sb);
    sb->obj = NULL;
    *sseg = UINT64_MAX;
    PyObject *v = seg < (uint64_t)PyList_GET_SIZE(views) ? PyList_GET_ITEM(views, (Py_ssize_t)seg) : NULL;
    if (v == NULL || !PyMemoryView_Check(v) || PyObject_GetBuffer(v, sb, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        sb->obj = NULL;
        return -1;
    }
    *sseg = seg;
    return 0;
}

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
    uint64_t sseg = UINT64_MAX, written = 0;
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
        if (source(views, seg, &sb, &sseg) < 0) break; /* not mapped here: the pure loop maps it */
        const uint8_t *src = (const uint8_t *)sb.buf;
        const uint64_t slim = (uint64_t)sb.len;
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

/* Does a buffer of n bytes hold a u32 / u64 at index i? */
static int in_u32(uint64_t n, uint64_t i) { return i < n / 4; }
static int in_u64(uint64_t n, uint64_t i) { return i < n / 8; }

/* build_records(om, old_slot_size, key_size, slots, start, views, nm,
 * new_slot_size, new_nslots, old_roster, old_rec_base, new_roster,
 * new_rec_base, new_of_old, copied_loc, dst, dst_lim, dst_seg, tail, now,
 * (occ, hwm, live, expired, dele)) -> (stop, tail, occ, hwm, live, expired,
 * dele, held): Builder._copy's loop for slots[start:] (at most MOVE_BATCH):
 * each old slot's record copied verbatim to dst at tail and its key
 * re-inserted into the new index `nm` (hash: xxh3_64 of the key, or its
 * first 8 bytes for a hashed key; linear probe), with its recency stamp and
 * a roster entry; expired and unreadable records skipped, as the pure loop
 * skips them; new_of_old / copied_loc (arrays 'I' / 'Q' by old slot)
 * filled. The rec bases are Builder's (rec_base - 1). held: stopped at
 * slots[stop], which the pure loop is to do (a segment to map or a record
 * past our map of it, the destination to roll over, a slot or stamp out of
 * its map). */
static PyObject *build_records(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 21 || !PyList_CheckExact(args[3]) || !PyList_CheckExact(args[5]) || !PyTuple_CheckExact(args[20]) ||
        PyTuple_GET_SIZE(args[20]) != 5) {
        PyErr_SetString(PyExc_TypeError, "build_records: 21 arguments (see the C source)");
        return NULL;
    }
    PyObject *slots = args[3], *views = args[5], *c = args[20];
#define U64(o) PyLong_AsUnsignedLongLong(o)
    const uint64_t oss = U64(args[1]), K = U64(args[2]), nss = U64(args[7]), n = U64(args[8]);
    const uint64_t orb = U64(args[10]), nrb = U64(args[12]), dseg = U64(args[17]), now = U64(args[19]);
    uint64_t dlim = U64(args[16]), tail = U64(args[18]);
    uint64_t occ = U64(PyTuple_GET_ITEM(c, 0)), hwm = U64(PyTuple_GET_ITEM(c, 1)), live = U64(PyTuple_GET_ITEM(c, 2));
    uint64_t expired = U64(PyTuple_GET_ITEM(c, 3)), dele = U64(PyTuple_GET_ITEM(c, 4));
#undef U64
    const Py_ssize_t start = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred()) return NULL;
    if (K < MMF_MIN_KEY_SIZE || K > MMF_MAX_KEY_SIZE || oss < K + SLOT_FIXED || oss > MMF_MAX_SLOT_SIZE ||
        nss < K + SLOT_FIXED || nss > MMF_MAX_SLOT_SIZE || n < 1 || n > 0xFFFFFFFFULL || dseg > 0xFFFFFFFFULL ||
        start < 0 || orb > (1ULL << 40) || nrb > (1ULL << 40)) {
        PyErr_SetString(PyExc_ValueError, "build_records: a geometry out of range");
        return NULL;
    }
    Py_buffer ob = {0}, nb = {0}, orr = {0}, nr = {0}, nob = {0}, clb = {0}, db = {0}, sb = {0};
    PyObject *res = NULL;
    if (PyObject_GetBuffer(args[0], &ob, PyBUF_SIMPLE) < 0) goto fail;
    if (PyObject_GetBuffer(args[6], &nb, PyBUF_WRITABLE) < 0) goto fail;
    if (PyObject_GetBuffer(args[9], &orr, PyBUF_SIMPLE) < 0) goto fail;
    if (PyObject_GetBuffer(args[11], &nr, PyBUF_WRITABLE) < 0) goto fail;
    if (PyObject_GetBuffer(args[13], &nob, PyBUF_WRITABLE) < 0) goto fail;
    if (PyObject_GetBuffer(args[14], &clb, PyBUF_WRITABLE) < 0) goto fail;
    if (PyObject_GetBuffer(args[15], &db, PyBUF_WRITABLE) < 0) goto fail;
    const uint8_t *om = (const uint8_t *)ob.buf, *oroster = (const uint8_t *)orr.buf;
    uint8_t *nm = (uint8_t *)nb.buf, *nroster = (uint8_t *)nr.buf, *dst = (uint8_t *)db.buf;
    uint8_t *new_of_old = (uint8_t *)nob.buf, *copied_loc = (uint8_t *)clb.buf;
    const uint64_t onslots = (uint64_t)ob.len < HB ? 0 : ((uint64_t)ob.len - HB) / oss;
    if ((uint64_t)nb.len < HB || ((uint64_t)nb.len - HB) / nss < n) {
        PyErr_SetString(PyExc_ValueError, "build_records: the new index is shorter than its slots");
        goto fail;
    }
    if (dlim > (uint64_t)db.len) dlim = (uint64_t)db.len;
    const Py_ssize_t count = PyList_GET_SIZE(slots);
    const Py_ssize_t end = count - start > MOVE_BATCH ? start + MOVE_BATCH : count;
    uint64_t sseg = UINT64_MAX;
    Py_ssize_t i = start;
    int held = 1;
    for (;; i++) {
        if (i >= end) {
            held = 0;
            break;
        }
        uint64_t slot = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(slots, i));
        if (PyErr_Occurred()) {
            PyErr_Clear();
            break;
        }
        if (slot < 1 || slot > onslots || !in_u32((uint64_t)nob.len, slot) || !in_u64((uint64_t)clb.len, slot)) break;
        const uint8_t *o = om + HB + (slot - 1) * oss, *ol = o + K;
        uint64_t seg = mmx_le32(ol + 8), off = mmx_le32(ol + 12), mtime = mmx_le64(ol + 16);
        unsigned kflags = ol[1], sklen = ol[2];
        put64(copied_loc + 8 * slot, seg << 32 | off);
        put32(new_of_old + 4 * slot, 0xFFFFFFFFu); /* SKIP */
        if (ol[0] != ST_OCCUPIED || off < SEG_HB) continue;
        if (source(views, seg, &sb, &sseg) < 0) break; /* not mapped here: the pure loop maps it */
        const uint8_t *src = (const uint8_t *)sb.buf;
        const uint64_t slim = (uint64_t)sb.len;
        if (off > slim || slim - off < RH) break; /* the header past our map: the pure loop remaps */
        const uint8_t *r = src + off;
        if (r[MMF_REC_MAGIC_AT] != MMF_REC_MAGIC) continue;
        uint64_t exp = mmx_le64(r + MMF_REC_EXPIRE);
        if (exp && exp <= now) {
            expired++;
            continue;
        }
        uint64_t klen = mmx_le32(r + MMF_REC_KLEN), vlen = mmx_le32(r + MMF_REC_VLEN);
        uint64_t rec_len = (RH + klen + vlen + ((r[MMF_REC_KFLAGS] & MMF_KF_SIGNED) ? MMF_REC_MAC_BYTES : 0) + 7) & ~7ULL;
        if (slim - off < rec_len) break; /* past our map: the pure loop remaps */
        if (tail > dlim || dlim - tail < rec_len) break; /* the destination rolls over */
        /* the key's hash, and its new slot */
        uint64_t kl = sklen < K ? sklen : K, h;
        if (kflags & MMF_KF_HASHED) {
            uint8_t first[8] = {0};
            memcpy(first, o, kl < 8 ? kl : 8);
            h = mmx_le64(first);
        } else {
            h = mmx_xxh3_64(o, (size_t)kl, 0);
        }
        uint64_t at = h % n, left = n;
        uint8_t *no = nm + HB + at * nss;
        while (no[K] == ST_OCCUPIED && --left) {
            if (++at == n) at = 0;
            no = nm + HB + at * nss;
        }
        if (no[K] == ST_OCCUPIED) break; /* no free slot: the pure loop decides */
        uint64_t ostamp = orb + slot, nstamp = nrb + at + 1;
        if (!in_u64((uint64_t)orr.len, ostamp) || !in_u64((uint64_t)nr.len, nstamp) ||
            (uint64_t)nr.len < ROSTER_HB || !in_u32((uint64_t)nr.len - ROSTER_HB, occ))
            break;
        /* nothing is stored before here for this slot but its two markers */
        memcpy(dst + tail, r, (size_t)rec_len);
        if (no[K] == ST_DELETED) dele--;
        memcpy(no, o, (size_t)K);
        no[K + 1] = (uint8_t)kflags;
        no[K + 2] = (uint8_t)sklen;
        no[K + 3] = 0;
        put32(no + K + 4, (uint32_t)occ);
        put32(no + K + 8, (uint32_t)dseg);
        put32(no + K + 12, (uint32_t)tail);
        put64(no + K + 16, mtime);
        put32(no + K + 24, (uint32_t)rec_len);
        put32(no + K + 28, 0);
        no[K] = ST_OCCUPIED;
        put64(nroster + 8 * nstamp, mmx_le64(oroster + 8 * ostamp));
        put32(nroster + ROSTER_HB + 4 * occ, (uint32_t)(at + 1));
        occ++;
        tail += rec_len;
        if (at >= hwm) hwm = at + 1;
        live += rec_len;
        put32(new_of_old + 4 * slot, (uint32_t)(at + 1));
    }
    res = Py_BuildValue("(nKKKKKKO)", i, (unsigned long long)tail, (unsigned long long)occ, (unsigned long long)hwm,
                        (unsigned long long)live, (unsigned long long)expired, (unsigned long long)dele,
                        held ? Py_True : Py_False);
fail: /* (a buffer never taken has obj NULL: its release does nothing) */
    PyBuffer_Release(&sb);
    PyBuffer_Release(&db);
    PyBuffer_Release(&clb);
    PyBuffer_Release(&nob);
    PyBuffer_Release(&nr);
    PyBuffer_Release(&orr);
    PyBuffer_Release(&nb);
    PyBuffer_Release(&ob);
    return res;
}

static PyMethodDef compact_methods[] = {
    {"move_records", (PyCFunction)(void (*)(void))move_records, METH_FASTCALL,
     "HeapCopier._move's loop for a batch of slots (see the C source)."},
    {"build_records", (PyCFunction)(void (*)(void))build_records, METH_FASTCALL,
     "Builder._copy's loop for a batch of slots (see the C source)."},
    {NULL, NULL, 0, NULL},
};

int mmx_compact_init(PyObject *m) { return PyModule_AddFunctions(m, compact_methods); }
