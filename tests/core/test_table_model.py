"""MmapCache against a dict model: thousands of random operations (hypothesis)."""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mmcache import MmapCache

# short keys, keys around key_size (32 here) and long keys that share prefixes
keys = st.one_of(
    st.text(min_size=1, max_size=4),
    st.binary(min_size=1, max_size=4),
    st.text(alphabet="ab", min_size=30, max_size=40),
    st.builds(lambda s: "L" * 100 + s, st.text(max_size=3)),
)
# small values and values just either side of the size the write path
# stops copying into the prepared record (record.INLINE_VALUE)
values = st.one_of(st.binary(max_size=300), st.binary(min_size=1020, max_size=1030))


class TableModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.path = self.dir + "/t"
        self.c = MmapCache(self.path, size=256, slot_size=64, key_size=32, max_segment_bytes=1 << 16)
        self.model: dict[str | bytes, bytes] = {}

    @rule(k=keys, v=values)
    def put(self, k: str | bytes, v: bytes) -> None:
        if k not in self.model and len(self.model) >= self.c.get_stats()["capacity"]:
            return
        self.c.put(k, v)
        self.model[k] = v

    @rule(k=keys)
    def get(self, k: str | bytes) -> None:
        assert self.c.get(k) == self.model.get(k)

    @rule(k=keys)
    def delete(self, k: str | bytes) -> None:
        assert self.c.delete(k) == (k in self.model)
        self.model.pop(k, None)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def get_existing(self, data: st.DataObject) -> None:
        k = data.draw(st.sampled_from(sorted(self.model, key=repr)))
        assert self.c.get(k) == self.model[k]

    @rule()
    def rebuild(self) -> None:
        self.c.atomic_rebuild()

    @rule()
    def reopen(self) -> None:
        self.c.close()
        self.c = MmapCache(self.path, size=256, slot_size=64, key_size=32, max_segment_bytes=1 << 16)

    @invariant()
    def same_contents(self) -> None:
        assert len(self.c) == len(self.model)

    def teardown(self) -> None:
        try:
            assert dict(self.c.list_items()) == self.model
            assert sorted(self.c.list(), key=repr) == sorted(self.model, key=repr)
            assert self.c.verify() == []
        finally:
            self.c.close()
            shutil.rmtree(self.dir, ignore_errors=True)


TableModel.TestCase.settings = settings(max_examples=60, stateful_step_count=80, deadline=None)
test_table_matches_dict = TableModel.TestCase
