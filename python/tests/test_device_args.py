"""The GPU path's argument handling, on any machine: arrays that say they are in GPU memory
(`__cuda_array_interface__`) are checked in Python before the native launch, and without a
GPU the launch is a `LaunchError` naming the missing driver, never a crash."""

import importlib.util
import os
import sys

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


def test_dlpack_capsules_are_read_as_they_are():
    a = np.arange(24, dtype=np.float32).reshape(4, 6)[1:, ::2]  # offset, strided
    ptr, device, code, shape, strides = tessera._tessera.dlpack_tensor(a.__dlpack__())
    assert ptr == a.ctypes.data and device == (1, 0)
    assert code == dict(tessera._tessera.dtype_codes())["f32"]
    assert (shape, strides) == ([3, 3], [6, 2])
    with pytest.raises(tessera.LaunchError, match="no Tessera dtype"):
        tessera._tessera.dlpack_tensor(np.zeros(3, np.complex64).__dlpack__())


class FakeCudaDLPack:
    """A NumPy array's capsule behind a CUDA device type (never launched: no GPU here, or the
    device is refused first)."""

    def __init__(self, a, device=(2, 0)):
        self._a, self._device = a, device

    def __dlpack__(self, stream=None):
        return self._a.__dlpack__()

    def __dlpack_device__(self):
        return self._device


def test_dlpack_arrays_on_a_gpu_take_the_gpu_path():
    add = vector_add()
    x = FakeCudaDLPack(np.zeros(8, np.float32))
    with pytest.raises(tessera.LaunchError, match="GPU 0"):
        add(x, x, FakeCudaDLPack(np.zeros(8, np.float32), device=(2, 1)))
    if not tessera.gpu_available():
        with pytest.raises(tessera.LaunchError, match="no CUDA driver|GPU"):
            add(x, x, x)


class FakeTorchTensor:
    """Reads like a torch CUDA tensor to the native launch fast path (`_tessera.set_torch`)."""

    def __init__(self, shape, device=0, dtype="float32", stride=None):
        self.shape, self.dtype, self._device = tuple(shape), dtype, device
        self._stride = tuple(stride) if stride is not None else tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))

    def get_device(self):
        return self._device

    def data_ptr(self):
        return 1 << 20

    def stride(self):
        return self._stride


@pytest.mark.skipif(tessera.gpu_available(), reason="checks the machine without a GPU")
def test_the_native_fast_path_reaches_the_launch_and_falls_back_for_anything_else():
    # The fast path's view of torch is set once per process: this test needs one without torch.
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed: the fast path belongs to it")
    tessera._tessera.set_torch(FakeTorchTensor, lambda device: 0, [("float32", dict(tessera._tessera.dtype_codes())["f32"])])
    add = vector_add()
    x = FakeTorchTensor((8,))
    # Taken natively: it reaches the launch, which needs a GPU.
    with pytest.raises(tessera.LaunchError, match="no CUDA driver|GPU"):
        add(x, x, x)
    # A bad layout is refused natively, before the launch.
    with pytest.raises(tessera.LaunchError, match="argument 2: .*rank at most"):
        add(x, x, FakeTorchTensor((8,), stride=(1, 1)))
    # Another device, an unknown dtype, a keyword argument: the Python path, which does not take
    # these objects (no torch) and says so.
    for z in (FakeTorchTensor((8,), device=1), FakeTorchTensor((8,), dtype="complex64")):
        with pytest.raises(tessera.LaunchError, match="must be a NumPy or DLPack array"):
            add(x, x, z)
    with pytest.raises(tessera.LaunchError, match="must be a NumPy or DLPack array"):
        add(x, x, z=x)
