/* The write side of mmcache._native._speedups (_write.c): what the module's
 * init in _speedups.c calls to register it. */
#ifndef MMCACHE_WRITE_H
#define MMCACHE_WRITE_H
#include <Python.h>

/* Adds Putter and rebuild_wanted to `module`. 0 on success, -1 with an
 * exception set. */
int mmx_write_init(PyObject *module);

/* Adds move_records (_compact.c, compaction's record copy) to `module`. */
int mmx_compact_init(PyObject *module);

#endif
