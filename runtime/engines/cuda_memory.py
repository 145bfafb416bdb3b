"""CUDA device memory for the GPU engines, through cuda-python: allocation, copies and one
stream (`CudaMemory`), the same interface over host memory (`HostMemory`), and the arrays that
live there (`DeviceArray`), the device-resident key/value cache the GPU engines share.

On the GPU the decoder's cache never goes through the host: an engine's ``encode`` returns the
cross keys/values as `DeviceArray` handles, ``decode`` takes them with the self-attention cache
as handles and returns the new cache as handles; only the logits come back each step. A
`DeviceArray` does what the decoders of `runtime.decoding` do to a cache array, on the device:
``k[rows]`` (rows kept), ``k[:, :, :n]`` (a prefix; ``:0`` is the empty cache), ``.shape``,
and ``np.take_along_axis(k, index, 2)`` (aggressive decoding's compaction), each as a few
``cudaMemcpy2DAsync`` calls. `runtime.engines.CacheOps` names those three operations as engine
methods with numpy-compatible defaults.

The native TensorRT engine (`runtime.engines.tensorrt`) and onnxruntime's CUDA provider with
IO binding (`runtime.engines.onnx`) use these arrays; `HostMemory` puts them in host memory,
where onnxruntime's CPU provider and the tests use them.

cuda-python is imported only when device memory is asked for (`require_cudart`); this module
imports without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import math
import weakref

import numpy as np

from runtime.errors import UserError

log = logging.getLogger("kmcorrect.engine")

ALIGNMENT = 256  # bytes: what cudaMalloc guarantees and TensorRT expects of tensor addresses

ONNX_DTYPES = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
}


# --- what this machine has ------------------------------------------------------------------


BOUND = "keeping the decoder cache on the GPU needs an NVIDIA GPU and cuda-python"
CUDA_HINT = "pip install cuda-python"


def missing(what: str, purpose: str, hint: str) -> UserError:
    """The UserError for a GPU feature this machine cannot run: what ``purpose`` needs, how to
    install it, and what is missing."""
    return UserError(f"{purpose}: {hint} ({what})")


def require_cudart(purpose: str = BOUND, hint: str = CUDA_HINT):
    """cuda-python's runtime module, once a CUDA device is visible; else a UserError that
    says what ``purpose`` needs and how to install it."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python layout
        except ImportError:
            raise missing("cuda-python is not installed", purpose, hint) from None
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        raise missing(f"no CUDA device is visible: {_error_name(cudart, err)}", purpose, hint)
    return cudart


def _error_name(cudart, err) -> str:
    try:
        _, name = cudart.cudaGetErrorName(err)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # only for a message
        return str(err)


def check(cudart, result: tuple, what: str):
    """cuda-python returns ``(err, *values)``: the value(s), or a RuntimeError naming the
    call and the CUDA error."""
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"{what} failed: {_error_name(cudart, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _native_handle(obj) -> int:
    """The address a cuda-python handle (a stream) wraps, for TensorRT's ``size_t`` handles."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(obj)
    return int(get_cuda_native_handle(obj))


# --- memory ------------------------------------------------------------------------------------


class _Buffer:
    """One allocation: ``ptr`` until the object is collected, then freed by ``free``."""

    __slots__ = ("__weakref__", "keep", "ptr")

    def __init__(self, ptr: int, free=None, keep=None) -> None:
        self.ptr = ptr
        self.keep = keep  # host memory backing the buffer (HostMemory)
        if free is not None:
            weakref.finalize(self, free, ptr)


class CudaMemory:
    """Device memory and copies on one CUDA stream of one device, through cuda-python.

    Allocation and freeing are stream-ordered (``cudaMallocAsync``/``cudaFreeAsync``), so a
    buffer dropped while the stream still uses it is reused only after that work. Host arrays
    given to ``upload``/``download`` are kept until ``synchronize``.
    """

    device_type = "cuda"

    def __init__(self, cudart, device: int = 0) -> None:
        self._rt = cudart
        self.device_id = device
        check(cudart, cudart.cudaSetDevice(device), "cudaSetDevice")
        self.stream = check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.stream_handle = _native_handle(self.stream)
        self._d2d = cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self._h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._pending: list[np.ndarray] = []
        self._keep_freed_memory()
        self._null = self.alloc(ALIGNMENT)  # the address of every zero-size array

    @property
    def null_ptr(self) -> int:
        return self._null.ptr

    def _keep_freed_memory(self) -> None:
        """Let the default pool keep freed memory instead of returning it to the driver at
        every synchronization: the cache is reallocated at every decoder step."""
        rt = self._rt
        try:
            from cuda.bindings import driver

            pool = check(rt, rt.cudaDeviceGetDefaultMemPool(self.device_id), "default pool")
            attr = rt.cudaMemPoolAttr.cudaMemPoolAttrReleaseThreshold
            threshold = driver.cuuint64_t(2**64 - 1)
            check(rt, rt.cudaMemPoolSetAttribute(pool, attr, threshold), "pool threshold")
        except Exception as exc:  # an optimization only
            log.debug("memory pool release threshold left as is: %s", exc)

    def alloc(self, nbytes: int) -> _Buffer:
        ptr = check(self._rt, self._rt.cudaMallocAsync(nbytes, self.stream), "cudaMallocAsync")
        return _Buffer(int(ptr), self._free)

    def _free(self, ptr: int) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit the context may be gone
            self._rt.cudaFreeAsync(ptr, self.stream)

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        result = self._rt.cudaMemcpyAsync(dst, src, nbytes, self._d2d, self.stream)
        check(self._rt, result, "cudaMemcpyAsync")

    def copy_2d(self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int):
        result = self._rt.cudaMemcpy2DAsync(
            dst, dpitch, src, spitch, width, height, self._d2d, self.stream
        )
        check(self._rt, result, "cudaMemcpy2DAsync")

    def upload(self, ptr: int, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        self._pending.append(host)
        result = self._rt.cudaMemcpyAsync(
            ptr, host.ctypes.data, host.nbytes, self._h2d, self.stream
        )
        check(self._rt, result, "cudaMemcpyAsync (to the device)")

    def download(self, host: np.ndarray, ptr: int) -> None:
        self._pending.append(host)
        result = self._rt.cudaMemcpyAsync(
            host.ctypes.data, ptr, host.nbytes, self._d2h, self.stream
        )
        check(self._rt, result, "cudaMemcpyAsync (to the host)")

    def synchronize(self) -> None:
        check(self._rt, self._rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        self._pending.clear()


class HostMemory:
    """`CudaMemory`'s interface over host memory: for onnxruntime's CPU provider with IO
    binding, and for testing the device-side cache anywhere."""

    device_type = "cpu"
    device_id = 0
    stream_handle = 0

    def __init__(self) -> None:
        self._null = self.alloc(ALIGNMENT)

    @property
    def null_ptr(self) -> int:
        return self._null.ptr

    def alloc(self, nbytes: int) -> _Buffer:
        block = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
        return _Buffer(block.ctypes.data + (-block.ctypes.data) % ALIGNMENT, keep=block)

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        ctypes.memmove(dst, src, nbytes)

    def copy_2d(self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int):
        for row in range(height):
            ctypes.memmove(dst + row * dpitch, src + row * spitch, width)

    def upload(self, ptr: int, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        ctypes.memmove(ptr, host.ctypes.data, host.nbytes)

    def download(self, host: np.ndarray, ptr: int) -> None:
        ctypes.memmove(host.ctypes.data, ptr, host.nbytes)

    def synchronize(self) -> None:
        pass


def cuda_memory(cudart=None, device: int = 0) -> CudaMemory:
    """A `CudaMemory` on ``device`` for onnxruntime's IO binding, or a UserError when
    cuda-python or a GPU is missing."""
    return CudaMemory(cudart or require_cudart(), device)


# --- arrays --------------------------------------------------------------------------------------


class DeviceArray:
    """A C-ordered array in a memory's address space (the GPU's, under `CudaMemory`): the
    handle GPU engines return for a key/value cache tensor.

    Immutable from Python: indexing returns a new array (or this one when nothing changes),
    so handles can be shared like numpy views. ``numpy()`` copies to the host (it waits for
    the stream); nothing converts implicitly.
    """

    __slots__ = ("_owner", "dtype", "memory", "ptr", "shape")

    def __init__(self, memory, ptr: int, shape: tuple[int, ...], dtype, owner=None) -> None:
        self.memory = memory
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.ptr = int(ptr) if self.size else memory.null_ptr
        self._owner = owner  # whatever keeps the memory alive: a _Buffer, an OrtValue

    @classmethod
    def empty(cls, memory, shape, dtype) -> DeviceArray:
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        buffer = memory.alloc(nbytes) if nbytes else None
        return cls(memory, buffer.ptr if buffer else 0, shape, dtype, buffer)

    @classmethod
    def from_numpy(cls, memory, array: np.ndarray, dtype=None) -> DeviceArray:
        host = np.ascontiguousarray(array, dtype=dtype)
        out = cls.empty(memory, host.shape, host.dtype)
        if host.nbytes:
            memory.upload(out.ptr, host)
        return out

    @classmethod
    def of(cls, memory, value, dtype=None) -> DeviceArray:
        """``value`` itself when it already lives in ``memory`` (with ``dtype``), else a copy
        uploaded from the host."""
        if isinstance(value, DeviceArray):
            if value.memory is not memory:
                raise ValueError("a DeviceArray of another engine's memory")
            if dtype is not None and value.dtype != np.dtype(dtype):
                raise TypeError(f"a {value.dtype} array where {np.dtype(dtype)} is expected")
            return value
        return cls.from_numpy(memory, value, dtype)

    @classmethod
    def from_ortvalue(cls, memory, value) -> DeviceArray:
        """Wrap an onnxruntime output (an ``OrtValue`` in ``memory``'s address space)."""
        dtype = ONNX_DTYPES[value.element_type()]
        return cls(memory, value.data_ptr(), tuple(value.shape()), dtype, value)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"DeviceArray({self.memory.device_type}, shape={self.shape}, dtype={self.dtype})"

    def numpy(self) -> np.ndarray:
        host = np.empty(self.shape, dtype=self.dtype)
        if host.nbytes:
            self.memory.download(host, self.ptr)
        self.memory.synchronize()
        return host

    # What the decoders do to a cache array ---------------------------------------------------

    def __getitem__(self, key):
        if isinstance(key, (np.ndarray, list)):
            return self.take_rows(key)
        if isinstance(key, slice):
            key = (key,)
        if isinstance(key, tuple) and all(isinstance(k, slice) for k in key):
            return self._slice(key)
        raise TypeError(
            "a DeviceArray supports a row index or mask (a[rows]) and contiguous slices "
            f"(a[:, :, start:stop]), not {key!r}"
        )

    def take_rows(self, rows) -> DeviceArray:
        """``a[rows]`` along axis 0, for a boolean mask or integer indices."""
        rows = np.asarray(rows)
        if rows.ndim != 1:
            raise IndexError("rows must be one-dimensional")
        if rows.dtype == bool:
            if len(rows) != self.shape[0]:
                raise IndexError(f"a mask of {len(rows)} rows for {self.shape[0]}")
            rows = np.flatnonzero(rows)
        elif not np.issubdtype(rows.dtype, np.integer):
            raise IndexError(f"row indices must be integers or booleans, not {rows.dtype}")
        n = self.shape[0]
        if len(rows) and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        rows = np.where(rows < 0, rows + n, rows)
        if len(rows) == n and (rows == np.arange(n)).all():
            return self
        out = DeviceArray.empty(self.memory, (len(rows), *self.shape[1:]), self.dtype)
        row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        if not row_bytes:
            return out
        for start, source, length in _runs(rows):
            self.memory.copy(
                out.ptr + start * row_bytes, self.ptr + source * row_bytes, length * row_bytes
            )
        return out

    def _slice(self, key: tuple[slice, ...]) -> DeviceArray:
        if len(key) > self.ndim:
            raise IndexError(f"{len(key)} indices for a {self.ndim}-d array")
        cut = []
        for axis, part in enumerate(key):
            start, stop, step = part.indices(self.shape[axis])
            if step != 1:
                raise IndexError("a DeviceArray slice must have step 1")
            stop = max(stop, start)
            if (start, stop) != (0, self.shape[axis]):
                cut.append((axis, start, stop))
        if not cut:
            return self
        if len(cut) > 1:
            raise IndexError("a DeviceArray is sliced along one axis at a time")
        axis, start, stop = cut[0]
        shape = (*self.shape[:axis], stop - start, *self.shape[axis + 1 :])
        out = DeviceArray.empty(self.memory, shape, self.dtype)
        if out.size:
            outer = math.prod(self.shape[:axis])
            inner = math.prod(self.shape[axis + 1 :]) * self.dtype.itemsize
            width = (stop - start) * inner
            src = self.ptr + start * inner
            self.memory.copy_2d(out.ptr, width, src, self.shape[axis] * inner, width, outer)
        return out

    def take_along_axis(self, indices: np.ndarray, axis: int) -> DeviceArray:
        """``np.take_along_axis(a, indices, axis)`` for an index that varies only along axis 0
        and ``axis`` (shape ``[b or 1, 1, .., w, 1, ..]``), as aggressive decoding's compaction
        of the cache is. Each row's index is cut into runs of consecutive slots (one strided
        copy each) and runs of one repeated slot (filled by doubling copies)."""
        indices = np.asarray(indices)
        axis = axis + self.ndim if axis < 0 else axis
        if not np.issubdtype(indices.dtype, np.integer):
            raise IndexError("take_along_axis needs integer indices")
        if indices.ndim != self.ndim or not 0 < axis < self.ndim:
            raise ValueError("take_along_axis: index and array must have the same rank, axis > 0")
        if any(indices.shape[d] != 1 for d in range(1, self.ndim) if d != axis):
            raise NotImplementedError("a DeviceArray index may vary only along axis 0 and axis")
        rows = max(self.shape[0], indices.shape[0])
        if {self.shape[0], indices.shape[0]} - {1, rows}:
            raise ValueError(f"take_along_axis: {indices.shape} does not broadcast to {self.shape}")
        dim = self.shape[axis]
        index = indices.reshape(indices.shape[0], -1)
        if index.size and (index.min() < -dim or index.max() >= dim):
            raise IndexError(f"index out of range for axis {axis} of size {dim}")
        index = np.where(index < 0, index + dim, index)
        width = index.shape[1]
        shape = (rows, *self.shape[1:axis], width, *self.shape[axis + 1 :])
        out = DeviceArray.empty(self.memory, shape, self.dtype)
        if not out.size:
            return out
        outer = math.prod(self.shape[1:axis])  # per row
        slot = math.prod(self.shape[axis + 1 :]) * self.dtype.itemsize
        src_row = outer * dim * slot if self.shape[0] > 1 else 0
        dst_row = outer * width * slot
        copy = self.memory.copy_2d
        for row in range(rows):
            idx = index[row if index.shape[0] > 1 else 0]
            src, dst = self.ptr + row * src_row, out.ptr + row * dst_row
            for at, first, length, repeated in _segments(idx):
                if not repeated:
                    w = length * slot
                    copy(dst + at * slot, width * slot, src + first * slot, dim * slot, w, outer)
                    continue
                copy(dst + at * slot, width * slot, src + first * slot, dim * slot, slot, outer)
                filled = 1
                while filled < length:
                    k = min(filled, length - filled)
                    here = dst + at * slot
                    copy(here + filled * slot, width * slot, here, width * slot, k * slot, outer)
                    filled += k
        return out

    def __array_function__(self, func, types, args, kwargs):
        if func is np.take_along_axis:
            arr, indices, *rest = args
            axis = rest[0] if rest else kwargs.get("axis", -1)
            if arr is self and not isinstance(indices, DeviceArray) and axis is not None:
                return self.take_along_axis(indices, axis)
        return NotImplemented


def _runs(rows: np.ndarray):
    """``(output position, first source row, length)`` of each run of consecutive rows."""
    if not len(rows):
        return
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks]).astype(int)
    ends = np.concatenate([breaks, [len(rows)]]).astype(int)
    for start, end in zip(starts, ends, strict=True):
        yield int(start), int(rows[start]), int(end - start)


def _segments(idx: np.ndarray):
    """``(position, first slot, length, repeated)`` for runs of ``idx`` that either count up
    by one or repeat one slot."""
    n = len(idx)
    if n == 0:
        return
    step = np.diff(idx)
    start = np.zeros(n, dtype=bool)
    start[0] = True
    start[1:] = (step != 0) & (step != 1)
    start[2:] |= step[1:] != step[:-1]
    bounds = [*np.flatnonzero(start).tolist(), n]
    for a, b in itertools.pairwise(bounds):
        yield a, int(idx[a]), b - a, b - a > 1 and step[a] == 0
