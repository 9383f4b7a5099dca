"""Mixed stress: several processes, each with several threads, checked
against a model, while other processes are killed with SIGKILL.

Part of the reliability harness (``stress.py``): the test suite runs it
bounded (tests/proofs/test_reliability.py), ``reliability_report.py`` longer.

Two tables, both compacting all the time (small ``compact_min_bytes``):

- the *model* table, large enough to need no eviction: each checked thread
  owns some keys and keeps what it last put or deleted under them, so every
  read of its own key must give exactly that (else a write was lost or a
  delete undone), and every checked thread increments one shared counter in
  a transaction (``put(k, get(k) + 1)``), which must end at the number of
  acknowledged increments;
- the *evict* table, capped at far fewer entries than its keys (LRU eviction
  all the time): a read of an owned key gives what its owner last put, or a
  miss (evicted), never an older value and never a deleted one back; every
  value starts with its key.

Chaos processes do the same kinds of work (and more ``atomic_rebuild``s) on
keys of their own, unchecked, and are killed with SIGKILL at random moments
(mid-put, mid-rebuild, holding the writer lock or a stats stripe) and
replaced. Any exception a checked caller sees is counted as an error.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import threading
import time
import traceback
from typing import Any

from mmcache import MmapCache

# No eviction in the model table ("none": a full table would be an error).
MODEL_OPTS: dict[str, Any] = {"size": 2048, "max_segment_bytes": 1 << 16, "compact_min_bytes": 16 << 10,
                              "compact_threshold": 0.3, "eviction": "none"}  # fmt: skip
EVICT_OPTS: dict[str, Any] = {"size": 512, "max_segment_bytes": 1 << 16, "compact_min_bytes": 16 << 10,
                              "compact_threshold": 0.3, "max_entries": 60}  # fmt: skip
OWN_KEYS = 12  # model keys per thread
EVICT_KEYS = 20  # evict-table keys per thread
COUNTER = "counter"


def _value(key: str, seq: int, rnd: random.Random) -> bytes:
    return f"{key}|{seq}|".encode() + b"." * rnd.randrange(400)


def _short(v: bytes | None) -> str | None:
    """A value as ``key|seq`` (enough to tell which put it came from)."""
    return None if v is None else v.split(b"|")[0].decode() + "|" + v.split(b"|")[1].decode()


def _thread(paths: tuple[str, str], tag: str, deadline: float, checked: bool, seed: int,
            out: dict[str, Any]) -> None:  # fmt: skip
    """One thread's loop; fills ``out`` with its counts, final model and the
    first few anomalies seen (``examples``)."""
    m = MmapCache(paths[0], **MODEL_OPTS)
    e = MmapCache(paths[1], **EVICT_OPTS)
    rnd = random.Random(seed)
    model: dict[str, bytes | None] = {}
    emodel: dict[str, bytes | None] = {}
    n = dict(ops=0, lost=0, resurrected=0, wrong=0, errors=0, incr=0)
    seq = 0
    examples: list[str] = out.setdefault("examples", [])

    def anomaly(t: MmapCache, table: str, key: str, want: bytes | None, got: bytes | None) -> None:
        kind = "lost" if want is not None else "resurrected"
        n[kind] += 1
        if len(examples) < 5:  # read again: a passing glitch, or for good?
            again = [_short(t.get(key)) for _ in range(3)]
            examples.append(f"{kind} in {table} at op {n['ops']}: {key} want {_short(want)} "
                            f"got {_short(got)}, then {again}")  # fmt: skip

    while time.monotonic() < deadline:
        seq += 1
        r = rnd.random()
        n["ops"] += 1
        try:
            if r < 0.25:
                k = f"{tag}m{rnd.randrange(OWN_KEYS)}"
                v = m.get(k)
                if checked and v != model.get(k):
                    anomaly(m, "model", k, model.get(k), v)
            elif r < 0.45:
                k = f"{tag}m{rnd.randrange(OWN_KEYS)}"
                v2 = _value(k, seq, rnd)
                m.put(k, v2)
                model[k] = v2
            elif r < 0.52:
                k = f"{tag}m{rnd.randrange(OWN_KEYS)}"
                m.delete(k)
                model[k] = None
            elif r < 0.60:
                ctr = COUNTER if checked else f"{tag}ctr"
                with m.transaction():
                    cur = m.get(ctr)
                    m.put(ctr, b"%d" % (int(cur or b"0") + 1))
                n["incr"] += 1
            elif r < 0.75:
                k = f"{tag}e{rnd.randrange(EVICT_KEYS)}"
                v = e.get(k)
                if v is not None and not v.startswith(k.encode() + b"|"):
                    n["wrong"] += 1
                elif checked and v is not None and v != emodel.get(k):
                    anomaly(e, "evict", k, emodel.get(k), v)
            elif r < 0.93:
                k = f"{tag}e{rnd.randrange(EVICT_KEYS)}"
                v2 = _value(k, seq, rnd)
                e.put(k, v2)
                emodel[k] = v2
            elif r < 0.97:
                k = f"{tag}e{rnd.randrange(EVICT_KEYS)}"
                e.delete(k)
                emodel[k] = None
            elif r < 0.995:
                e.evict(rnd.randrange(1, 4))
            else:
                (m if rnd.random() < 0.5 else e).atomic_rebuild()
        except Exception:  # noqa: BLE001 - every exception to a caller is a failure here
            n["errors"] += 1
            if n["errors"] <= 3:
                out.setdefault("tracebacks", []).append(traceback.format_exc())
    out.update(n, model=model)
    m.close()
    e.close()


def _process(paths: tuple[str, str], wid: int, nthreads: int, duration: float, checked: bool,
             q: Any) -> None:  # fmt: skip
    deadline = time.monotonic() + duration
    outs: list[dict[str, Any]] = [{} for _ in range(nthreads)]
    threads = [
        threading.Thread(target=_thread, args=(paths, f"p{wid}t{t}", deadline, checked,
                                               wid * 1000 + t + int(time.time()), outs[t]))  # fmt: skip
        for t in range(nthreads)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if q is not None:
        q.put(outs)


def mixed(base: str, nprocs: int = 3, nthreads: int = 3, duration: float = 10.0, chaos: int = 2,
          kill_every: float = 0.7, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Run ``nprocs`` checked processes of ``nthreads`` threads each and
    ``chaos`` unchecked ones (``nthreads`` threads too), one of which is
    killed every ``kill_every`` s and replaced; returns the counts."""
    paths = (os.path.join(base, "model"), os.path.join(base, "evict"))
    MmapCache(paths[0], **MODEL_OPTS).close()
    MmapCache(paths[1], **EVICT_OPTS).close()
    with MmapCache(paths[0], **MODEL_OPTS) as m0, MmapCache(paths[1], **EVICT_OPTS) as e0:
        gen0 = (m0.get_stats()["generation"], e0.get_stats()["generation"])
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    rnd = random.Random(seed)
    checked = [
        ctx.Process(target=_process, args=(paths, w, nthreads, duration, True, q)) for w in range(nprocs)
    ]
    for p in checked:
        p.start()
    # Chaos slot i runs as worker nprocs + i: a replacement reuses its keys.
    chaos_procs: dict[int, Any] = {}
    kills = 0
    end = time.monotonic() + duration
    next_kill = time.monotonic() + kill_every
    while time.monotonic() < end:
        for i in range(chaos):
            if i not in chaos_procs or not chaos_procs[i].is_alive():
                p = ctx.Process(target=_process, args=(paths, nprocs + i, nthreads, 3600.0, False, None))
                p.start()
                chaos_procs[i] = p
        if chaos and time.monotonic() >= next_kill:
            victim = chaos_procs[rnd.randrange(chaos)]
            victim.kill()  # SIGKILL
            victim.join(60)
            kills += 1
            next_kill = time.monotonic() + kill_every * rnd.uniform(0.5, 1.5)
        time.sleep(0.02)
    for p in chaos_procs.values():
        p.kill()
        p.join(60)
    kills += len(chaos_procs)
    outs = [o for _ in checked for o in q.get(timeout=duration + 300)]
    for p in checked:
        p.join(60)
    res: dict[str, Any] = {k: sum(o.get(k, 0) for o in outs)
                           for k in ("ops", "lost", "resurrected", "wrong", "errors", "incr")}  # fmt: skip
    res.update(processes=nprocs, threads=nprocs * nthreads, kills=kills, exit_failures=0,
               tracebacks=[t for o in outs for t in o.get("tracebacks", [])],
               examples=[x for o in outs for x in o.get("examples", [])])  # fmt: skip
    res["exit_failures"] = sum(p.exitcode != 0 for p in checked)
    with MmapCache(paths[0], **MODEL_OPTS) as m, MmapCache(paths[1], **EVICT_OPTS) as e:
        # What the checked threads last did must be what is stored now.
        for o in outs:
            for k, v in o.get("model", {}).items():
                got = m.get(k)
                if got != v:
                    res["lost" if v is not None else "resurrected"] += 1
                    res["examples"].append(f"at the end in model: {k} want {_short(v)} got {_short(got)}")
        stored = int(m.get(COUNTER) or b"0")
        res["incr_lost"] = res["incr"] - stored
        res["wrong"] += sum(
            not v.startswith((k.encode() if isinstance(k, str) else k) + b"|")
            for t in (m, e) for k, v in t.list_items() if not str(k).endswith("ctr") and k != COUNTER
        )  # fmt: skip
        res["inconsistent"] = int(bool(m.verify() or e.verify()))
        st_m, st_e = m.get_stats(), e.get_stats()
        res["rebuilds"] = st_m["generation"] - gen0[0] + st_e["generation"] - gen0[1]
        res["evictions"] = st_e["evictions"]
    return res


def failures(r: dict[str, Any]) -> int:
    """What must be zero in every run."""
    keys = ("lost", "resurrected", "wrong", "errors", "incr_lost", "inconsistent", "exit_failures")
    return sum(abs(int(r[k])) for k in keys)
