"""A deployed form holds a wider unsigned index in the signed type of its width (ExecuTorch has
no uint16 or uint32 kernels); reading it back gives numpy's unsigned values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecbench.compressors import held_index, smallest_unsigned_dtype, widened


@pytest.mark.parametrize("largest", [200, 40_000, 65_535, 3_000_000_000, 4_294_967_295])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_held_indices_read_back_as_the_unsigned_values(largest, dtype):
    values = np.array([0, 1, largest // 3, largest - 1, largest],
                      dtype=smallest_unsigned_dtype(largest))
    held = held_index(values)
    assert held.element_size() == values.itemsize  # the same bytes
    assert held.dtype in (torch.uint8, torch.int16, torch.int32)
    if dtype == torch.int32 and largest > np.iinfo(np.int32).max:
        return  # int32 cannot hold them; forms widen to int64 there
    np.testing.assert_array_equal(widened(held, dtype).numpy(), values.astype(np.int64))
    assert widened(held, dtype).dtype == dtype


def test_a_torch_index_is_held_the_same_way():
    columns = torch.tensor([3, 299, 65_000], dtype=torch.uint16)
    held = held_index(columns)
    assert held.dtype == torch.int16 and widened(held).tolist() == [3, 299, 65_000]
