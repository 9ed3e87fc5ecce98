"""A pretend GPU for a machine without one: tensors that say they live on `cuda:0` but hold CPU values, so that the
library's GPU paths run for real, with real numbers and real gradients, and any mixing of devices fails as it would
on a GPU ("Expected all tensors to be on the same device").

PyTorch's `FakeTensorMode` also makes tensors on a fake `cuda` device and raises the real mismatch error, but its
tensors hold no values: a `.item()`, a `bool()` or an `allclose` stops there, and the code after the first
data-dependent step goes unchecked. `meta` tensors stop at the same places. Here every call runs on the CPU values
underneath, and a torch-function mode checks, at every call of the torch API, the devices its tensors claim.

    with fake_cuda():
        torch.cuda.is_available()           # True inside the block
        model.to("cuda")                    # parameters and buffers on the pretend cuda:0
        model(torch.zeros(1, 3, 224, 224))  # DeviceMismatch, as on a GPU

The rules are CUDA's:
- a call whose tensors sit on both devices fails, except for a CPU scalar (0-d tensor), the copies between devices
  (`.to`, `.cuda()`, `.cpu()`, `copy_`) and CPU index tensors into a cuda tensor (indexing moves them); a cuda
  index into a CPU tensor fails;
- a factory with `device="cuda"` makes a pretend-cuda tensor, and one given a CPU generator fails;
- `.numpy()` of a pretend-cuda tensor fails; `.item()`, `float()`, `bool()` and `.tolist()` work (a synchronising
  copy on a GPU);
- anything computed from a pretend-cuda tensor is one, gradients included.

It checks where tensors are, not which kernels a GPU would choose: cuDNN, streams and memory are not simulated.
"""
from __future__ import annotations

import contextlib
import threading
from unittest import mock

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA = torch.device("cuda", 0)


class _Methods:
    """`T.name`: the Tensor method and its C base's, which the torch-function mode may be handed either of."""

    def __getattr__(self, name: str) -> frozenset:
        return frozenset({getattr(torch.Tensor, name), getattr(torch._C.TensorBase, name, None)} - {None})


T = _Methods()


class DeviceMismatch(RuntimeError):
    pass


def _plain(t: torch.Tensor) -> torch.Tensor:
    with torch._C.DisableTorchFunction():
        return t.as_subclass(torch.Tensor)


class FakeCudaTensor(torch.Tensor):
    """A CPU tensor that reports `cuda:0` (an alias: same storage, same autograd history)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """Calls on these tensors are checked in any thread (a torch-function mode is active only in the thread
        that entered it: the service scores in worker threads)."""
        return _handle(func, args, kwargs or {})

    @property
    def device(self) -> torch.device:
        return CUDA

    @property
    def is_cuda(self) -> bool:
        return True

    @property
    def is_cpu(self) -> bool:
        return False

    def get_device(self) -> int:
        return 0

    def numpy(self, *a, **k):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to "
                        "host memory first.")

    def __array__(self, *a, **k):
        return self.numpy()

    def __deepcopy__(self, memo):
        if id(self) not in memo:
            with torch._C.DisableTorchFunction():
                new = self.detach().as_subclass(torch.Tensor).__deepcopy__({}).requires_grad_(self.requires_grad)
            out = _cuda(new)
            if getattr(self, "_is_param", False):
                out._is_param = True
            memo[id(self)] = out
        return memo[id(self)]

    def __reduce_ex__(self, proto):  # saved as what a GPU tensor loads as with map_location="cpu"
        return _plain(self).__reduce_ex__(proto)

    def __repr__(self, **k) -> str:
        return f"{_plain(self)!r} (pretend cuda:0)"


def _cuda(t):
    """`t` as a pretend-cuda tensor: an alias that stays in `t`'s autograd graph, or a leaf where `t` is one."""
    if isinstance(t, torch.Tensor) and not isinstance(t, FakeCudaTensor):
        with torch._C.DisableTorchFunction():
            if t.is_leaf and t.requires_grad:
                return t.detach().as_subclass(FakeCudaTensor).requires_grad_(True)
            return t.as_subclass(FakeCudaTensor)
    return t


def _is_cuda(device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


# Calls that take tensors on two devices on a real GPU: the copies, and indexing with CPU index tensors.
_CROSS = (T.to | T.cuda | T.cpu | T.copy_ | T.__getitem__ | T.__setitem__ | T.index_put_ | T.index_put
          | {torch.index_put, torch._has_compatible_shallow_copy_type})
_INDEXING = T.__getitem__ | T.__setitem__ | T.index_put_ | T.index_put | {torch.index_put}  # CPU indices only
_TO_HOST = T.item | T.tolist | T.__bool__ | T.__float__ | T.__int__ | T.__index__ | T.__len__
_NOOPS = {**dict.fromkeys(T.pin_memory, lambda t, *a, **k: t), **dict.fromkeys(T.is_pinned, lambda t, *a, **k: False)}


def _tensors(args, kwargs) -> list[torch.Tensor]:
    return [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]


class _Mode(TorchFunctionMode):
    """Sees every call of the torch API in the thread that entered it, factories with `device="cuda"` included."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return _handle(func, args, kwargs or {})


def _handle(func, args, kwargs):
    """One call of the torch API: devices checked, run on the CPU values, results on the device they belong to."""
    if func in _NOOPS:
        return _NOOPS[func](*args, **kwargs)
    tensors = _tensors(args, kwargs)
    on_cuda = any(isinstance(t, FakeCudaTensor) for t in tensors)
    if func in _INDEXING and on_cuda and not isinstance(args[0], FakeCudaTensor):
        raise DeviceMismatch("indices should be either on cpu or on the same device as the indexed tensor (cpu) "
                             f"({getattr(func, '__qualname__', func)})")
    if func not in _CROSS and on_cuda:
        cpu = [t for t in tensors if not isinstance(t, FakeCudaTensor) and t.dim() > 0]
        if cpu:
            shapes = ", ".join(f"{tuple(t.shape)} on {'cuda:0' if isinstance(t, FakeCudaTensor) else t.device}"
                               for t in tensors)
            raise DeviceMismatch("Expected all tensors to be on the same device, but found at least two devices, "
                                 f"cuda:0 and cpu! ({getattr(func, '__qualname__', func)}: {shapes})")
    to_cuda = None  # True: the result is on cuda; False: on the CPU; None: wherever the inputs are
    if func in T.to:
        device = torch._C._nn._parse_to(*args[1:], **kwargs)[0]
        to_cuda = None if device is None else device.type == "cuda"
        if device is not None:
            args = (args[0], *(torch.device("cpu") if isinstance(a, (str, torch.device)) and _is_cuda(a) else a
                               for a in args[1:]))
            if isinstance(kwargs.get("device"), (str, torch.device)):
                kwargs = {**kwargs, "device": torch.device("cpu")}
            if args[1:] and isinstance(args[1], torch.Tensor):  # .to(other): its device and dtype
                args = (args[0], torch.device("cpu"), args[1].dtype, *args[2:])
    elif func in T.cuda:
        to_cuda, func, args = True, torch.Tensor.cpu, args[:1]
    elif func in T.cpu:
        to_cuda = False
    elif _is_cuda(kwargs.get("device")):  # a factory, or a *_like with a device
        g = kwargs.get("generator")
        if g is not None and g.device.type != "cuda":
            raise DeviceMismatch(f"Expected a 'cuda' device type for generator but found '{g.device.type}' "
                                 f"({getattr(func, '__qualname__', func)})")
        to_cuda, kwargs = True, {**kwargs, "device": torch.device("cpu")}
    with torch._C.DisableTorchFunctionSubclass():
        out = func(*args, **kwargs)
    if to_cuda is False or func in _TO_HOST or not (on_cuda or to_cuda):
        return tree_map(lambda t: _plain(t) if isinstance(t, FakeCudaTensor) else t, out) \
            if to_cuda is False else out
    inputs = {id(t): t for t in tensors if isinstance(t, FakeCudaTensor)}
    return tree_map(lambda t: inputs.get(id(t), _cuda(t)) if isinstance(t, torch.Tensor) else t, out)


def _in_mode(bootstrap):
    """A thread started inside `fake_cuda` sees the pretend GPU too (a torch-function mode is per thread; the
    service scores in worker threads)."""
    def run(self):
        with _Mode():
            bootstrap(self)
    return run


@contextlib.contextmanager
def fake_cuda():
    """Inside the block this machine has one pretend GPU, `cuda:0`; modules moved there keep their parameters'
    objects' class (`torch.__future__.set_overwrite_module_params_on_conversion`)."""
    was = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        with mock.patch("torch.cuda.is_available", return_value=True), \
                mock.patch("torch.cuda.device_count", return_value=1), \
                mock.patch("torch.cuda.current_device", return_value=0), \
                mock.patch("torch.cuda.get_device_name", return_value="pretend GPU (CPU values)"), \
                mock.patch("torch.cuda.get_device_capability", return_value=(9, 0)), \
                mock.patch("torch.cuda.synchronize"), mock.patch("torch.cuda.empty_cache"), \
                mock.patch("torch.cuda.reset_peak_memory_stats"), \
                mock.patch("torch.cuda.max_memory_allocated", return_value=0), \
                mock.patch("torch.accelerator.current_stream",  # optimisers ask whether a CUDA graph is captured
                           return_value=mock.Mock(is_capturing=lambda: False)), \
                mock.patch.object(threading.Thread, "_bootstrap_inner", _in_mode(threading.Thread._bootstrap_inner)), \
                _Mode():
            yield
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(was)
