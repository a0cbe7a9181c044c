"""The daemon's garbage-collector tuning (meshshift/runtime/collector.py), on the real collector."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from meshshift.runtime.collector import YOUNG_THRESHOLD, CollectorTuning, tuned_collector


class Node:
    """An object that can be part of a reference cycle and be watched with a weakref."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[Node, weakref.ref[Node]]:
    first, second = Node(), Node()
    first.other, second.other = second, first
    return first, weakref.ref(first)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def test_young_threshold_while_installed_and_the_old_one_after(restored: None) -> None:
    before = gc.get_threshold()
    with tuned_collector() as tuning:
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
        assert tuning._on_collection in gc.callbacks
    assert gc.get_threshold() == before
    assert tuning._on_collection not in gc.callbacks


def test_a_full_collection_freezes_what_survived(restored: None) -> None:
    kept = [Node() for _ in range(1000)]
    with tuned_collector() as tuning:
        gc.collect()
        assert tuning.full_collections == 1
        frozen = gc.get_freeze_count()
        assert frozen >= len(kept)
        assert all(gc.is_tracked(node) for node in kept)
    assert gc.get_freeze_count() == 0  # uninstalled: nothing stays frozen


def test_garbage_that_never_was_frozen_is_collected_as_usual(restored: None) -> None:
    with tuned_collector():
        gc.collect()
        node, watched = cycle()
        del node
        gc.collect()
        assert watched() is None


def test_a_cycle_that_died_frozen_is_freed_by_the_next_scan_of_everything(restored: None) -> None:
    clock = Clock()
    tuning = CollectorTuning(unfreeze_every=600.0, clock=clock)
    with tuned_collector(tuning):
        node, watched = cycle()
        gc.collect()  # the cycle is alive: frozen with the rest
        del node
        gc.collect()  # too early for a scan of everything: the frozen cycle is not looked at
        assert watched() is not None
        assert tuning.full_scans == 0
        clock.now = 600.0
        gc.collect()
        assert watched() is None
        assert tuning.full_scans == 1


def test_installing_twice_keeps_the_first_thresholds(restored: None) -> None:
    before = gc.get_threshold()
    tuning = CollectorTuning(young_threshold=5000)
    tuning.install()
    tuning.install()
    try:
        assert gc.callbacks.count(tuning._on_collection) == 1
    finally:
        tuning.uninstall()
    assert gc.get_threshold() == before
