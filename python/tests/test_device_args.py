"""The GPU path's argument handling, on any machine: arrays that say they are in GPU memory
(`__cuda_array_interface__`) are checked in Python before the native launch, and without a
GPU the launch is a `LaunchError` naming the missing driver, never a crash."""

import os

import numpy as np
import pytest

import tessera

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


class FakeDeviceArray:
    """An array claiming GPU memory (never dereferenced: every case fails before a launch, or
    there is no GPU)."""

    def __init__(self, shape, typestr="<f4", strides=None, readonly=False):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (1 << 20, readonly),
                                         "strides": strides, "version": 3}


def vector_add():
    return tessera.compile(os.path.join(EXAMPLES, "vector_add.tile")).vector_add


def test_read_only_outputs_unknown_types_and_partial_elements_are_refused():
    add = vector_add()
    x = FakeDeviceArray((8,))
    with pytest.raises(tessera.LaunchError, match="`z` is written by the kernel but its array is read-only"):
        add(x, x, FakeDeviceArray((8,), readonly=True))
    with pytest.raises(tessera.LaunchError, match="type <c8 have no Tessera dtype"):
        add(x, x, FakeDeviceArray((8,), typestr="<c8"))
    with pytest.raises(tessera.LaunchError, match="not whole elements"):
        add(x, x, FakeDeviceArray((8,), strides=(6,)))


def test_host_and_device_tensors_do_not_mix():
    add = vector_add()
    x = FakeDeviceArray((8,))
    with pytest.raises(tessera.LaunchError, match="`y` in host memory"):
        add(x, np.zeros(8, np.float32), x)


@pytest.mark.skipif(tessera.gpu_available(), reason="checks the machine without a GPU")
def test_without_a_gpu_the_launch_is_an_error():
    add = vector_add()
    x = FakeDeviceArray((8,))
    assert not tessera.gpu_available()
    with pytest.raises(tessera.LaunchError, match="no CUDA driver|GPU"):
        add(x, x, x)


def test_dtype_codes_cover_every_dtype():
    codes = dict(tessera._tessera.dtype_codes())
    assert sorted(codes.values()) == list(range(len(codes)))
    assert {"bf16", "f16", "f32", "i32", "bool"} <= set(codes)
