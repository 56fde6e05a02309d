"""`cli.collection`: a command collects its youngest generation seldom, still frees cycles, and leaves as it found."""

from __future__ import annotations

import gc
import weakref

import pytest

from mlops_template.cli.collection import YOUNG, command_collection


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture
def thresholds():
    before = gc.get_threshold()
    yield before
    gc.unfreeze()  # the command's exit freezes the heap; the test process carries on
    gc.set_threshold(*before)


def test_a_command_collects_the_youngest_generation_every_young_allocations_then_restores(thresholds):
    with command_collection():
        assert gc.get_threshold() == (YOUNG, *thresholds[1:])
    assert gc.get_threshold() == thresholds


def test_cyclic_garbage_made_during_a_command_is_still_freed_as_allocations_go_on(thresholds):
    gc.collect()
    with command_collection():
        node = _Node()
        ref = weakref.ref(node)
        del node
        assert ref() is not None  # a cycle: refcounting alone does not free it
        kept = [[] for _ in range(YOUNG * 3)]  # allocations that pass the threshold, with no explicit collection
        assert ref() is None
        del kept


def test_the_heap_is_frozen_at_the_end_of_a_command_even_when_it_fails(thresholds):
    gc.unfreeze()
    with pytest.raises(SystemExit), command_collection():
        raise SystemExit(1)
    assert gc.get_freeze_count() > 0
