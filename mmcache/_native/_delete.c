/* MmapCache.delete in C: a Putter made with delete=True (see _write.c). */
#include "_write_int.h"
#include "xxh3.h"

/* ------------------------------------------------------------------ delete
 * writer.delete's common case: the key found, its record's header read for
 * the answer (live or expired), the slot tombstoned and taken out of the
 * roster (slots.remove_slot: the last entry moved into its place), counters
 * and bytes, the write sequence, in that order between dirty = 1 and 0.
 * The pure path's: whatever begin() would repair first (also the rebuild
 * fields past generation.build_sane), a slot whose roster link does not
 * check out, a record length or a record header it would have to remap. */
static int unplace(const Putter *p, State *st, const Put *a, int *was_live) {
    Py_buffer ib = {0}, sb = {0};
    int done = 0;
    const uint64_t K = (uint64_t)p->key_size, nslots = st->nslots, max_seg = st->max_seg;
    if (clock_ns(CLOCK_MONOTONIC) >= st->next_check) return 0; /* a staleness check: pure */
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(st->hot, 0), &ib, PyBUF_WRITABLE) < 0) {
        ib.obj = NULL;
        goto out;
    }
    uint8_t *idx = (uint8_t *)ib.buf;
    Hot h;
    if ((uint64_t)ib.len < HB || (uint64_t)ib.len - HB < nslots * st->ss || !read_hot(idx, st, &h)) goto out;
    if (mmx_le64(idx + 120) >= (1ULL << 48) || mmx_le32(idx + 128) >= (1u << 22) || mmx_le64(idx + 136) >= (1ULL << 48))
        goto out; /* generation.build_sane */
    uint64_t found, free;
    find_slot(idx, st, K, a, &found, &free);
    if (found == UINT64_MAX) { /* not there: False, nothing changed */
        *was_live = 0;
        done = 2;
        goto out;
    }
    uint8_t *sp = idx + HB + found * st->ss;
    uint64_t size = mmx_le32(sp + K + 24), pos = mmx_le32(sp + K + 4), slot = found + 1;
    if (size == 0 || size > max_seg) goto out; /* slots.recorded_size reads the record: pure */
    int live = record_live(st, sp, K); /* record.is_expired's answer */
    if (live < 0) goto out;
    /* the roster link (remove_slot's `linked`), checked before any store */
    if (PyObject_GetBuffer(st->roster, &sb, PyBUF_WRITABLE) < 0) {
        sb.obj = NULL;
        goto out;
    }
    uint8_t *roster = (uint8_t *)sb.buf;
    const uint64_t rn = (uint64_t)sb.len < ROSTER_HB ? 0 : ((uint64_t)sb.len - ROSTER_HB) / 4;
    uint64_t occ = h.occ, last = occ - 1, moved = 0;
    if (!(pos < occ && occ <= rn && mmx_le32(roster + ROSTER_HB + 4 * pos) == slot)) goto out;
    if (pos < last) {
        moved = mmx_le32(roster + ROSTER_HB + 4 * last);
        if (moved < 1 || moved > nslots) goto out;
    }

    idx[OFF_DIRTY] = 1;
    publish_fence();
    sp[K] = ST_DELETED;
    if (h.logging) log_change(idx, slot);
    publish_fence();
    if (pos < last) {
        put32(roster + ROSTER_HB + 4 * pos, (uint32_t)moved);
        put32(idx + HB + (moved - 1) * st->ss + K + 4, (uint32_t)pos);
        if (h.logging) log_change(idx, moved); /* its roster position changed */
    }
    uint8_t *c = idx + OFF_HOT;
    put64(c, occ - 1);
    put64(c + 8, h.dele + 1);
    put64(c + 40, h.live > size ? h.live - size : 0);
    put64(c + 48, h.dead + size);
    put64(c + 64, h.seq + 1);
    publish_fence();
    idx[OFF_DIRTY] = 0;
    *was_live = live;
    done = 1;
out:
    if (sb.obj != NULL) PyBuffer_Release(&sb);
    if (ib.obj != NULL) PyBuffer_Release(&ib);
    PyErr_Clear();
    return done;
}

/* delete(key): Py_True / Py_False; *pure set (and NULL returned, no error)
 * when the pure path is to answer; NULL with *pure clear: an error. */
static PyObject *do_delete(Putter *p, PyObject *key, int *pure) {
    State st = {0};
    Put a;
    PyObject *r = NULL;
    int live = 0, rc = 0;
    *pure = 1;
    if (!check_key(p, key, &a) || !load_state(p, &st, 0)) goto out;
    long depth = take_lock(&st);
    if (depth < 0) goto out;
    rc = unplace(p, &st, &a, &live);
    if (rc == 1) { /* s.local[DELETES] += 1 (not for a key that was not there) */
        PyObject *v = PyList_GET_ITEM(st.local, I_DELETES);
        long long n = PyLong_AsLongLong(v);
        PyObject *nv = n == -1 && PyErr_Occurred() ? NULL : PyLong_FromLongLong(n + 1);
        if (nv == NULL || PyList_SetItem(st.local, I_DELETES, nv) < 0) rc = -1;
    }
    if (drop_lock(&st, depth) < 0) rc = -1;
    if (rc != 0) *pure = 0;
    if (rc > 0) r = Py_NewRef(live ? Py_True : Py_False);
out:
    state_clear(&st);
    if (*pure) PyErr_Clear();
    return r;
}

PyObject *deleter_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Putter *p = (Putter *)self;
    if (PyVectorcall_NARGS(nargsf) == 1 && kwnames == NULL) {
        int pure;
        PyObject *r = do_delete(p, args[0], &pure);
        if (!pure) {
            if (r != NULL) p->answered++;
            return r;
        }
    }
    p->passed++;
    PyObject *f = PyObject_GetAttr(p->handle, S_delete_pure);
    if (f == NULL) return NULL;
    PyObject *r = PyObject_Vectorcall(f, args, nargsf, kwnames);
    Py_DECREF(f);
    return r;
}
