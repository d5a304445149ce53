"""The constants cache keeps converted tensors only while their numpy arrays live."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import torch

from bounds.engine.constants import array_memo, as_tensor, cache_size


def test_a_cached_tensor_is_reused_while_its_array_lives():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    first = as_tensor(array, "cpu", torch.float64)
    assert as_tensor(array, "cpu", torch.float64) is first
    assert first.dtype == torch.float64 and torch.equal(first, torch.as_tensor(array).double())
    assert as_tensor(array, "cpu", torch.float32).dtype == torch.float32


def test_the_cache_does_not_grow_with_the_models_a_worker_has_seen():
    gc.collect()
    before = cache_size()
    for seed in range(200):  # one "model" after another, each dropped when done
        weights = [np.random.default_rng(seed).normal(size=(4, 4)).astype(np.float32)
                   for _ in range(5)]
        start = cache_size()
        for w in weights:
            as_tensor(w, "cpu", torch.float64)
        assert cache_size() == start + len(weights)
        del weights, w
    gc.collect()
    assert cache_size() <= before


def test_a_tensor_sharing_the_arrays_memory_does_not_keep_it_alive():
    array = np.ones(5, dtype=np.float64)
    tensor = as_tensor(array, "cpu", torch.float64)
    assert torch.equal(tensor, torch.ones(5, dtype=torch.float64))
    del tensor
    gc.collect()
    before = cache_size()
    ref = weakref.ref(array)
    del array
    gc.collect()
    assert ref() is None and cache_size() < before


def test_integer_and_scalar_constants():
    idx = np.array([2, 0, 1], dtype=np.int64)
    assert as_tensor(idx, "cpu", torch.float64).dtype == torch.int64
    scalar = np.float32(1.5)  # numpy scalars cannot be weakly referenced: converted, not cached
    assert as_tensor(scalar, "cpu", torch.float64).item() == 1.5


def test_an_array_memo_computes_once_per_living_array_and_forgets_freed_ones():
    table, calls = {}, []

    def largest(a):
        calls.append(1)
        return float(np.abs(a).max())

    w = np.array([1.0, -3.0, 2.0])
    assert array_memo(table, w, largest) == 3.0
    assert array_memo(table, w, largest) == 3.0 and len(calls) == 1
    other = np.array([-5.0])  # another array: its own entry
    assert array_memo(table, other, largest) == 5.0 and len(table) == 2
    del w
    gc.collect()
    assert len(table) == 1  # the freed array's entry went with it
    scalar = np.float64(-7.0)  # not weakly referable: computed each time, never stored
    assert array_memo(table, scalar, largest) == 7.0
    assert array_memo(table, scalar, largest) == 7.0 and len(calls) == 4 and len(table) == 1
