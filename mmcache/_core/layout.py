"""The file format in one place: every struct, offset, magic number and file
name, except a heap record's, which ``record`` holds (the one module that
builds, parses, sizes and checks a record). Other modules name these, never
spell an offset of their own. docs/FORMAT.md describes the same bytes for
readers in other languages; keep the three in step and bump
``FORMAT_VERSION`` on any incompatible change. All integers are little-endian.

Files of one table (``gen`` is the generation, bumped by every rebuild):

    <path>                  index: header page + (size - 1) data slots
    <path>.roster.<gen>     roster: header + uint32 slot numbers of live entries
                            + uint64 recency stamps (LRU)
    <heap_path>.<gen>.<seg> heap segments: header + append-only records
    <path>.lock             control file: the writer's flock, owner locks, stats stripes

The index is the commit point: a rebuild writes a whole new generation of
roster and heap beside the old one, then renames a new index over <path>.
So the index always names (by generation) a complete, consistent set.
"""

from __future__ import annotations

import struct

FORMAT_VERSION = 2  # 2: u64 nanosecond recency stamps (LRU exact for accesses in turn)

# ---------------------------------------------------------------- index header
# The seed puts the header in "slot 0". Version 1 keeps slot numbering (data
# slots are 1 .. size-1, so 0 can mean "no slot" in the roster) but gives the
# header a 4 KiB page of its own: room for the per-process statistics stripes
# below and for future fields, and it keeps every slot at a fixed offset.
INDEX_MAGIC = b"MMCACHE\x00"
HEADER_BYTES = 4096

# Fields (offset: type name):
#   0: 8s magic | 8: u32 version | 12: u32 flags (bit 0: RETIRED)
#  16: u64 size | 24: u32 slot_size | 28: u32 key_size | 32: u64 max_segment_bytes
#  40: u64 generation | 48: u64 occupied | 56: u64 deleted | 64: u64 high_water_mark
#  72: u32 heap_seg (current segment) | 76: u32 dirty (1 while a writer mutates)
#  80: u64 heap_tail (bytes used in heap_seg) | 88: u64 live_bytes | 96: u64 dead_bytes
# 104: u64 created_ns | 112: u64 write_seq (bumped by every mutation)
HEADER = struct.Struct("<8sIIQIIQQQQQIIQQQQQ")
assert HEADER.size == 120
OFF_FLAGS = 12
COUNTERS = struct.Struct("<QQQ")  # occupied, deleted, high_water_mark
OFF_COUNTERS = 48
OFF_HEAP_SEG = 72
OFF_DIRTY = 76
HEAP_POS = struct.Struct("<IIQ")  # heap_seg, dirty, heap_tail
BYTES = struct.Struct("<QQ")  # live_bytes, dead_bytes
OFF_BYTES = 88
OFF_WRITE_SEQ = 112
# The fields a put changes, as one struct: occupied, deleted, high_water_mark,
# heap_seg, dirty, heap_tail, live_bytes, dead_bytes, created_ns, write_seq.
HOT = struct.Struct("<QQQIIQQQQQ")
OFF_HOT = 48
# 120: u64 next_gen (highest generation number handed out) | 128: u32 pid and
# 132: u32 random nonce of a concurrent rebuild in progress (0, 0: none; they
# name it for people and tools, never prove it alive: its OFD lock on the
# control file's byte LOCK_REBUILD does, see below) | 136: u64 its generation
BUILD = struct.Struct("<QIIQ")
OFF_BUILD = 120
U64 = struct.Struct("<Q")
U32 = struct.Struct("<I")

FLAG_RETIRED = 1  # this index has been replaced by a rebuild; reopen <path>
# A concurrent rebuild is copying this generation: writers log the slots they
# change (below). In the flags' second byte, so that the hot paths' one-byte
# test of the first (RETIRED) stays a test of RETIRED alone.
FLAG_LOGGING = 1 << 8
OFF_LOGGING = OFF_FLAGS + 1  # the byte holding FLAG_LOGGING
# 256: u32 count | 260: pad | 264: u32 slot numbers, LOG_CAP of them. While
# LOGGING is set, every mutation of a slot appends the slot's number (under
# the writer lock); a count past LOG_CAP means "overflowed: look at every
# slot". The builder takes (reads and resets) the log under the lock, so it
# revisits only what changed since its last look instead of every slot.
OFF_LOG = 256
OFF_LOG_ENTRIES = OFF_LOG + 8
LOG_CAP = (HEADER_BYTES - OFF_LOG_ENTRIES) // 4

# ------------------------------------------------------- control (lock) file
# <path>.lock is never replaced by a rebuild, so besides carrying the writer's
# flock it holds what must outlive generations: the statistics stripes.
# Each process counts in local variables and adds them into a 64-byte stripe
# of its own now and then (every staleness check and at close, never per
# operation), so no reader writes a shared cache line per get. A process
# owns stripe i while it holds the OFD lock on byte LOCK_STRIPES + i (taken
# without waiting and without the writer lock: readers flush stats too); it
# writes its pid and a random nonce at STATS_OWNER for people and tools. A
# dead process's lock is gone, so its stripe is taken over with its counts
# kept. With more than STATS_STRIPES live processes some share a stripe, and
# the sums become approximate (a racing increment can be lost).
#
# Owner locks: OFD byte-range locks (fcntl F_OFD_SETLK, one byte each) at
# these offsets of the control file, past its end (a lock needs no bytes).
# One open file description per owner: a thread's rebuild, a process's stripe.
LOCK_REBUILD = 1 << 20  # held by the table's one concurrent rebuild in progress
LOCK_STRIPES = LOCK_REBUILD + 64  # + i: held by the owner of stats stripe i
CTL_MAGIC = b"MMCLOCK\x00"
CTL_HEADER = struct.Struct("<8sI")  # magic, version
CTL_BYTES = 4096
OFF_STATS = 64
STATS_STRIPES = 32
STATS_STRIPE_BYTES = 64
STATS = struct.Struct("<7Q")  # hits, misses, sets, deletes, evictions, expirations, rebuilds
STATS_OWNER = 56  # u32 nonce, u32 pid of the stripe's owner (informative, see above)
STATS_PID = STATS_OWNER + 4  # the pid within it
OWNER = struct.Struct("<II")  # nonce, pid
STATS_FIELDS = ("hits", "misses", "sets", "deletes", "evictions", "expirations", "rebuilds")
# Indices of those counters (in a stripe and in a process's local counts).
HITS, MISSES, SETS, DELETES, EVICTIONS, EXPIRATIONS, REBUILDS = range(len(STATS_FIELDS))

# ------------------------------------------------------------------ data slots
# A slot is key_size bytes of key followed by SLOT_FIXED bytes of fields
# (offsets below are from the end of the key, K = key_size):
#   K+0: u8 state | K+1: u8 kflags | K+2: u8 klen | K+3: pad
#   K+4: u32 roster_pos (index of this slot in the roster while OCCUPIED)
#   K+8: u32 heap segment | K+12: u32 heap offset of the record
#  K+16: u64 mtime_ns (CLOCK_REALTIME of the put)
#  K+24: u32 record length (padded bytes of that record; 0: unknown, read the
#        record): a put that replaces the record learns the old size here,
#        from the slot it already has in cache, not from a random heap page
#  K+28: u32 reserved (0; recency stamps live in the roster file)
# The key comes first so that one slice compare, key + state + kflags + klen,
# tells a probe whether this slot holds its key. The key in the slot is the
# encoded key itself when it fits in key_size bytes (null padded; klen says
# how much is key), else its 16-byte xxh3_128 digest with KF_HASHED set.
# Either way the heap record holds the full key and every hit compares it, so
# keys that share a prefix or a digest can never see each other's value.
SLOT_FIXED = 32
SLOT_HEAD = struct.Struct("<BBBxIIIQII")
assert SLOT_HEAD.size == SLOT_FIXED
OFF_SLOT_ROSTER = 4
OFF_SLOT_LOC = 8  # (seg, off) written as one 8-byte field
SLOT_LOC = struct.Struct("<II")
OFF_SLOT_MTIME = 16
SLOT_LOC_MTIME_LEN = struct.Struct("<IIQI")  # seg, off, mtime, record length
OFF_SLOT_RECLEN = 24

EMPTY, OCCUPIED, DELETED = 0, 1, 2
KF_HASHED = 1  # slot holds a digest of the key
KF_STR = 2  # the key was given as str (UTF-8 encoded on disk)
DIGEST_BYTES = 16
MIN_KEY_SIZE = DIGEST_BYTES
MAX_KEY_SIZE = 255  # klen is a u8
MAX_SIZE = 2**32 - 1  # slot numbers are u32 in the roster

# --------------------------------------------------------------------- roster
ROSTER_MAGIC = b"MMCROST\x00"
ROSTER_HEADER = struct.Struct("<8sIIQQ")  # magic, version, pad, generation, capacity
ROSTER_HEADER_BYTES = 64
# followed by `size` u32 slot numbers (entries [0, occupied) are live), padded
# to a multiple of 8 bytes, then `size` u64 recency stamps, one per slot
# (index = slot - 1): the CLOCK_MONOTONIC time in ns (one clock for every
# process on the host) of the entry's last use (a hit or a put). A hit stores
# the clock read it makes anyway for its staleness check: no system call, no
# lock, and accesses made in turn (even a few hundred ns apart) get stamps in
# their order, so the LRU order is exact. Ages are taken modulo 2**64, so a
# stamp from before a reboot (or damaged) that lies in the future looks the
# oldest of all. Readers write stamps without any lock; no checksum covers
# them; they only steer LRU eviction. They live here, densely, rather than in
# the slots, so that a hit dirties one of few hot pages, not a random page of
# the index. The u64s are 8-aligned: a stamp is one store, never torn.
STAMP_MASK = 2**64 - 1


def _slot_numbers_bytes(size: int) -> int:
    return (4 * size + 7) & ~7


def roster_bytes(size: int) -> int:
    return ROSTER_HEADER_BYTES + _slot_numbers_bytes(size) + 8 * size


def recency_index(size: int, slot: int) -> int:
    """Index of ``slot``'s stamp in the roster file viewed as u64s."""
    return (ROSTER_HEADER_BYTES + _slot_numbers_bytes(size)) // 8 + slot - 1


# ----------------------------------------------------------------------- heap
SEG_MAGIC = b"MMCHEAP\x00"
SEG_HEADER = struct.Struct("<8sIIQ")  # magic, version, segment number, generation
SEG_HEADER_BYTES = 64

# Records follow the segment header, 8-byte aligned: their layout (structs,
# offsets, magic, MAC, size) is ``record``'s, the one module that builds,
# parses, sizes and checks one.
MAX_SEGMENT_LIMIT = 2**32 - 8  # offsets are u32
DEFAULT_MAX_SEGMENT_BYTES = 1 << 30
MIN_SEGMENT_BYTES = 1 << 16


def index_bytes(size: int, slot_size: int) -> int:
    return HEADER_BYTES + (size - 1) * slot_size


def slot_offset(slot: int, slot_size: int) -> int:
    """Offset of data slot ``slot`` (1 .. size-1) in the index file."""
    return HEADER_BYTES + (slot - 1) * slot_size


def roster_name(path: str, gen: int) -> str:
    return f"{path}.roster.{gen}"


def segment_name(heap_path: str, gen: int, seg: int) -> str:
    return f"{heap_path}.{gen}.{seg}"


def lock_name(path: str) -> str:
    return path + ".lock"
