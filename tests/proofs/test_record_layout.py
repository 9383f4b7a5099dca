"""A heap record's layout is defined once, in mmcache/_core/record.py (issue 18).

Other modules may bind record's structs (their methods) and offsets to
locals or globals for speed, but none may spell a record's format, an
offset into it, its magic or its padding rule: a format change then needs
record.py (and docs/FORMAT.md) alone, plus the compiled mirror. The checks
read the source (ast) and the imported modules; each is shown to fail on
code that breaks it.
"""

from __future__ import annotations

import ast
import importlib
import re
import struct
from pathlib import Path

import pytest

from mmcache import MmapCache
from mmcache._core import layout, record

PKG = Path(__file__).resolve().parents[2] / "mmcache"
RECORD_PY = PKG / "_core" / "record.py"
# The modules that read or write a table's files (other modules have formats
# of their own: tags' token lists, the decorators' argument encoding).
# layout.py, which names the other structures' offsets, is checked for
# record formats only.
LAYOUT_PY = PKG / "_core" / "layout.py"
TABLE_CODE = sorted({*(PKG / "_core").glob("*.py"), PKG / "table.py"} - {RECORD_PY, LAYOUT_PY})

_CODES = record.HEAD.format.lstrip("<>=!@")
# Every run of three or more of the header's format codes that takes in its
# u16 flags field ("H"): a format that contains one decodes (part of) a record
# header. (Runs of u32s and u64s alone are in other structures' formats too.)
_FLAGS = _CODES.index("H")
_RUNS = {_CODES[i:j] for i in range(_FLAGS + 1) for j in range(max(i + 3, _FLAGS + 1), len(_CODES) + 1)}
# The offsets of the header's fields past the first, its size and the MAC's.
OFFSETS = {struct.calcsize("<" + _CODES[:i]) for i in range(1, len(_CODES))} | {
    record.HEAD_BYTES,
    record.MAC_BYTES,
}


def record_format_literals(tree: ast.AST) -> list[str]:
    """String constants that look like a struct format of a record header."""
    out = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value[:1] in "<>=!@"
            and any(run in node.value for run in _RUNS)
        ):
            out.append(f"{node.lineno}: format {node.value!r}")
    return out


def record_number_literals(tree: ast.AST) -> list[str]:
    """A record offset added or subtracted as a number, the magic or a
    field's offset spelled anywhere, the padding rule (``& ~7``)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and type(side.value) is int and side.value in OFFSETS:
                    out.append(f"{node.lineno}: offset {ast.unparse(node)}")
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            if node.value in (record.MAGIC, record.OFF_MAGIC, record.OFF_KFLAGS):
                out.append(f"{node.lineno}: literal {node.value}")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert) and ast.unparse(node) == "~7":
            out.append(f"{node.lineno}: padding {ast.unparse(node)}")
    return out


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def test_no_module_but_record_spells_a_record_format() -> None:
    found = {
        str(p.relative_to(PKG)): hits
        for p in [*TABLE_CODE, LAYOUT_PY]
        if (hits := record_format_literals(_parse(p)))
    }
    assert found == {}, "a record's struct formats are record.py's: use record.HEAD / CHECKED_HEAD"


def test_no_table_module_spells_a_record_offset() -> None:
    found = {
        str(p.relative_to(PKG)): hits for p in TABLE_CODE if (hits := record_number_literals(_parse(p)))
    }
    assert found == {}, "name record offsets (record.OFF_*), its size (record.size) and magic (record.MAGIC)"


def _module_names(paths: list[Path]) -> list[str]:
    return [".".join(p.relative_to(PKG.parent).with_suffix("").parts) for p in paths]


def test_record_structs_elsewhere_are_records_own() -> None:
    """A struct (or a struct's bound method) with a record header's format
    in another module's globals must be one of record's objects, bound."""
    own = {id(record.HEAD), id(record.CHECKED_HEAD)}
    seen = 0
    for name in _module_names(TABLE_CODE):
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            st = value if isinstance(value, struct.Struct) else getattr(value, "__self__", None)
            if isinstance(st, struct.Struct) and any(run in st.format for run in _RUNS):
                assert id(st) in own, f"{name}.{attr} decodes a record with a struct of its own"
                seen += 1
    assert seen >= 2  # table and lookup bind record.HEAD's methods: the check looked at them


def test_layout_holds_no_record_fact() -> None:
    """layout.py (the other structures) names nothing of a record's."""
    values = {v for v in vars(layout).values() if type(v) is int}
    assert record.MAGIC not in values
    structs = [v for v in vars(layout).values() if isinstance(v, struct.Struct)]
    assert not [s.format for s in structs if any(run in s.format for run in _RUNS)]


BAD = {
    "off + 8": 1,  # the checked bytes' start
    "mv[off + 27]": 2,  # the magic's offset: as an offset and as a literal
    "x = y[26]": 1,
    "if magic != 0xA7: pass": 1,
    "n = (32 + klen + vlen + 7) & ~7": 2,  # the header's size, the padding
    "s = struct.Struct('<QQIIHBBI')": 1,
    "s = struct.Struct('<QIIHBBI')": 1,  # the header after its checksum
    "s = struct.Struct('>IIH')": 1,
}
GOOD = [
    "off + record.OFF_CHECKED",
    "mv[off + at_magic]",
    "n = record.size(klen, vlen, signed)",
    "s = struct.Struct('<QQ')",  # a header's counters (layout), not a record
    "s = struct.Struct('<IIQI')",
    "o + K + 3",
    "flags & ~layout.FLAG_RETIRED",
]


@pytest.mark.parametrize("src", sorted(BAD))
def test_the_checks_catch_a_spelled_record_fact(src: str) -> None:
    tree = ast.parse(src)
    assert len(record_format_literals(tree) + record_number_literals(tree)) == BAD[src]


@pytest.mark.parametrize("src", GOOD)
def test_the_checks_pass_named_facts(src: str) -> None:
    tree = ast.parse(src)
    assert record_format_literals(tree) + record_number_literals(tree) == []


def test_the_compiled_code_agrees_with_record() -> None:
    """The C sources cannot import record.py: their record constants (any
    of these names #defined in any of them) are compared here."""
    mirror = {"RECORD_HEADER": record.HEAD_BYTES, "RH": record.HEAD_BYTES, "REC_MAGIC": record.MAGIC,
              "KF_SIGNED": record.KF_SIGNED, "MAC_BYTES": record.MAC_BYTES}  # fmt: skip
    found = []
    for src in sorted((PKG / "_native").glob("*.[ch]")):
        for m in re.finditer(r"^#define (\w+) (0x[0-9A-Fa-f]+|\d+)\b", src.read_text(), re.M):
            if m[1] in mirror:
                found.append((src.name, m[1], int(m[2], 0)))
    assert {"RECORD_HEADER", "REC_MAGIC"} <= {name for _f, name, _v in found}  # the compiled get's
    assert [f for f in found if f[2] != mirror[f[1]]] == []


@pytest.mark.parametrize("secret", [None, b"s3cret"])
def test_size_is_what_the_writer_takes(tmp_path: Path, secret: bytes | None) -> None:
    """record.size / build's size is the heap space a put takes, what the
    slot records, and what read_record finds, either side of INLINE_VALUE."""
    with MmapCache(tmp_path / "t", size=64, secret=secret) as c:
        s = c._s
        assert s is not None
        for n, key in ((0, "k"), (record.INLINE_VALUE, "kk"), (record.INLINE_VALUE + 1, "kkk"), (5000, "é")):
            g = s.gen
            before = layout.HEAP_POS.unpack_from(g.idx, layout.OFF_HEAP_SEG)
            c.put(key, b"v" * n)
            seg, _dirty, tail = layout.HEAP_POS.unpack_from(g.idx, layout.OFF_HEAP_SEG)
            kb = key.encode()
            want = record.size(len(kb), n, secret)
            assert record.build(secret, kb, layout.KF_STR, b"v" * n, 0, 0)[4] == want
            assert (seg, tail) == (before[0], before[2] + want)
            o = c._lookup(g, *c._prep(key))[3]
            assert layout.U32.unpack_from(g.idx, o + g.key_size + layout.OFF_SLOT_RECLEN)[0] == want
            r = record.read_record(g, o)
            assert r is not None and r[7] == want == record.size_at(g, o) == record.slot_record_size(g, o)
            assert bool(r[6] & record.KF_SIGNED) == (secret is not None)
            assert g.heap.views[seg][tail - want + record.OFF_MAGIC] == record.MAGIC
