"""The local device: which one to use, what it is, and how SDPA picks a kernel on it.

Devices are named as torch names them: ``"cuda"``, ``"mps"``, ``"cpu"``. ``resolve_device("auto")``
prefers a CUDA GPU, then Apple's MPS, then the CPU. ``environment()`` describes the machine for
``Run.environment`` (device name, NVIDIA driver, torch / CUDA / cuDNN versions, threads, L2 size).

SDPA backends: ``sdpa_context(backend)`` forces one (``auto`` leaves torch's own choice; inside
a context that forces the same one it does nothing: torch's costs some 20 us of host time a call,
which a timed call must not pay where a model sets the backend once), and
``sdpa_backends_used(fn)`` runs ``fn`` once and reports which backend every
``scaled_dot_product_attention`` call really took, asking torch's own selector
(``torch._fused_sdp_choice``) with the call's real arguments, under the same forced backends.
``math_upcasts(dtype)`` says whether torch's math backend computes bf16/fp16 attention in fp32.

Health: ``free_memory(device)`` is what a point may still allocate, ``dtype_supported`` probes a
dtype (bf16 on MPS needs macOS 14), ``sticky_error(text)`` recognises the CUDA errors that leave the
context unusable for every later kernel of the process.
"""

import contextlib
import contextvars
import functools
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

from ..costmodel.hardware import HardwareError
from ..costmodel.results import Environment
from ..costmodel.units import DEVICES, FUSED_BACKENDS, SDPA_BACKENDS, TORCH_DTYPE_NAMES

DEVICE_CHOICES = ("auto",) + DEVICES  # what --device accepts
BACKEND_CHOICES = ("auto",) + SDPA_BACKENDS  # what --backend accepts ("auto": torch's own choice)

# SDPBackend member -> the name attncost uses (the names of --backend)
_SDP_NAMES = {"MATH": "math", "FLASH_ATTENTION": "flash", "EFFICIENT_ATTENTION": "efficient",
              "CUDNN_ATTENTION": "cudnn", "OVERRIDEABLE": "overrideable", "ERROR": "none"}


class DeviceError(ValueError):
    """The requested device or backend is not available here (one plain sentence)."""


def torch_dtype(name):
    """``"bf16"`` -> ``torch.bfloat16`` (also accepts torch's own names, and a torch dtype)."""
    import torch

    if isinstance(name, torch.dtype):
        return name
    name = TORCH_DTYPE_NAMES.get(name, name)
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise DeviceError(f"unknown dtype {name!r}: choose bf16, fp16 or fp32")
    return dt


def available(device: str) -> bool:
    import torch

    if device == "cpu":
        return True
    if device == "cuda":
        return torch.cuda.is_available()
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        return bool(mps and mps.is_available())
    return False


def resolve_device(requested: str = "auto") -> str:
    """``auto`` -> cuda, else mps, else cpu; an explicit device must be usable here."""
    requested = (requested or "auto").lower()
    if requested not in DEVICE_CHOICES:
        raise DeviceError(f"--device must be one of {', '.join(DEVICE_CHOICES)}, not {requested!r}")
    if requested == "auto":
        for dev in ("cuda", "mps"):
            if available(dev):
                return dev
        return "cpu"
    if not available(requested):
        what = {"cuda": "no CUDA GPU is visible to this torch build",
                "mps": "Apple's MPS backend is not available here"}[requested]
        raise DeviceError(f"--device {requested}: {what}; use --device auto or --device cpu")
    return requested


def synchronize(device: str) -> None:
    """Wait until the device has finished all queued work."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


# What the CUDA runtime reports for its sticky errors (cudaErrorIllegalAddress, cudaErrorAssert,
# cudaErrorIllegalInstruction, cudaErrorMisalignedAddress, cudaErrorInvalidPc,
# cudaErrorHardwareStackError, cudaErrorLaunchFailure, cudaErrorECCUncorrectable): after one, every
# later CUDA call of the process fails the same way ("CUDA Runtime API", error types).
STICKY_ERRORS = ("illegal memory access", "device-side assert", "illegal instruction", "misaligned address",
                 "invalid program counter", "hardware stack error", "unspecified launch failure",
                 "uncorrectable ecc error")


def sticky_error(text: Optional[str]) -> Optional[str]:
    """The sticky CUDA error that ``text`` (an error message) reports, or None."""
    low = (text or "").lower()
    return next((e for e in STICKY_ERRORS if e in low), None)


def free_memory(device: str) -> Optional[float]:
    """Bytes a point may still allocate: on CUDA the driver's free memory plus what torch's caching
    allocator holds unused (``mem_get_info`` counts that as used), on MPS the recommended limit less
    what is allocated, on the CPU the host's MemAvailable (else free pages); None when unknown."""
    import torch

    try:
        if device == "cuda":
            cached = torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
            return float(torch.cuda.mem_get_info()[0] + max(0, cached))
        if device == "mps":
            return float(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (RuntimeError, OSError, ValueError, AttributeError):  # no such API or counter here
        return None


def dtype_supported(device: str, dtype: str) -> bool:
    """Whether a small matmul in ``dtype`` runs on ``device`` (MPS has bf16 from macOS 14 on)."""
    import torch

    try:
        a = torch.ones(2, 2, device=device, dtype=torch_dtype(dtype))
        float((a @ a).sum())
    except (RuntimeError, TypeError):  # MPS raises either for a dtype it lacks
        return False
    return True


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    if device == "mps":
        return _sysctl("machdep.cpu.brand_string") or "Apple MPS"
    return _cpu_name()


def l2_bytes(device: str) -> Optional[int]:
    """The GPU's L2 cache size, where torch reports it."""
    if device != "cuda":
        return None
    import torch

    return getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "L2_cache_size", None)


def environment(device: str, dtype: str, *, hardware_profile: Optional[str] = None) -> Environment:
    """What a Run records about the machine it ran on."""
    import torch

    extra: dict = {"dtype": dtype, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    load = load_average()
    if load is not None:
        extra["load_average"] = round(load, 2)  # other work on the host when the run started
    driver = cuda = None
    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        cuda = torch.version.cuda
        driver = nvidia_driver()
        extra.update(
            sm_count=props.multi_processor_count,
            memory_bytes=props.total_memory,
            l2_bytes=getattr(props, "L2_cache_size", None),
            compute_capability=f"{props.major}.{props.minor}",
            cudnn=_cudnn_version(),
            timing_method="cuda events per repetition, L2 flushed between repetitions",
            peak_memory_method="CUDA caching allocator: max_memory_allocated above memory_allocated before",
        )
    else:
        extra.update(
            timing_method=("perf_counter around torch.mps.synchronize()" if device == "mps"
                           else "perf_counter (host wall clock)"),
            peak_memory_method="live tensor bytes at the dispatcher (op outputs, not kernel workspaces)",
        )
    return Environment(
        device=device, device_name=device_name(device), driver=driver, torch=torch.__version__,
        cuda=cuda, python=platform.python_version(), platform=platform.platform(),
        hardware_profile=hardware_profile, **extra)


def load_average() -> Optional[float]:
    """The host's 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy_warning(device: str) -> Optional[str]:
    """A sentence when other work loads the host enough to disturb timings (None otherwise): on a
    CPU every multi-threaded op then waits for a core; on a GPU, eager PyTorch's host time grows."""
    load, cores = load_average(), os.cpu_count() or 1
    if load is None or load < max(1.0, 0.5 * cores):
        return None
    what = "CPU timings" if device == "cpu" else "host-bound (eager, small-shape) timings"
    return (f"the host is busy (load average {load:.1f} on {cores} cores): {what} will be noisy; "
            f"rerun on an idle machine for numbers to keep")


def nvidia_driver() -> Optional[str]:
    """The NVIDIA driver version (e.g. "580.159.04"), or the CUDA driver API version."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        except pynvml.NVMLError:  # no driver library, no GPU
            pass
    out = _output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], timeout=10)
    if out:
        return out.splitlines()[0]
    import torch

    try:
        v = torch._C._cuda_getDriverVersion()  # e.g. 13000 -> CUDA driver API 13.0
    except (AttributeError, RuntimeError):  # a torch without CUDA, or no driver
        return None
    return f"CUDA driver API {v // 1000}.{v % 1000 // 10}"


def _cudnn_version() -> Optional[str]:
    import torch

    try:
        v = torch.backends.cudnn.version()
    except (AttributeError, RuntimeError):  # a build without cuDNN
        return None
    return str(v) if v else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        name = _sysctl("machdep.cpu.brand_string")
        if name:
            return name
    return platform.processor() or platform.machine() or "cpu"


def _sysctl(key: str) -> Optional[str]:
    if sys.platform != "darwin":
        return None
    return _output(["sysctl", "-n", key], timeout=5)


def _output(command: list, timeout: float) -> Optional[str]:
    """The stripped standard output of a command that succeeded; None otherwise."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):  # not installed, not runnable, timed out
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def slug(text: str) -> str:
    """A file-name-safe lowercase form: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    out = "".join(c.lower() if c.isalnum() else "-" for c in text)
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-")[:60] or "device"


# -- hardware profile for predictions -------------------------------------------------------
# (substring of the device name, candidate built-in profile names in order of preference)
_PROFILE_HINTS = (
    ("h200", ("h200",)),
    ("h100", ("h100", "h100-sxm", "h100_sxm")),
    ("a100", ("a100", "a100-80gb", "a100_80gb")),
    ("l4", ("l4",)),
    ("4090", ("rtx4090", "rtx-4090", "4090")),
    ("m3 max", ("m3-max", "m3_max", "m3max")),
    ("m2 max", ("m2-max", "m2_max", "m2max")),
)


def default_hardware(device: str, name: Optional[str] = None) -> Optional[str]:
    """The built-in profile that matches this device, or None when none does."""
    from ..costmodel.hardware import get_hardware

    name = (name if name is not None else device_name(device)).lower()
    candidates: list = []
    if device != "cpu":
        for key, profiles in _PROFILE_HINTS:
            if key in name:
                candidates.extend(profiles)
    if device == "cpu":
        candidates.extend(("cpu", "generic-cpu", "generic_cpu"))
    for c in candidates:
        try:
            get_hardware(c)
            return c
        except HardwareError:
            continue
    return None


# -- SDPA backends ------------------------------------------------------------------------
_FORCED: contextvars.ContextVar = contextvars.ContextVar("sdpa_forced", default="auto")


def sdpa_context(backend: str = "auto"):
    """A context that restricts SDPA to one backend; ``auto`` leaves torch's choice alone, and so does
    a context inside one that forces the same backend (entered once, around a timing, the forced
    backend costs the timed calls nothing)."""
    backend = (backend or "auto").lower()
    if backend == "auto" or backend == _FORCED.get():
        return contextlib.nullcontext()
    if backend not in BACKEND_CHOICES:
        raise DeviceError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, not {backend!r}")
    return _forced(backend)


@contextlib.contextmanager
def _forced(backend: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    member = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
              "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[backend]
    token = _FORCED.set(backend)
    try:
        with sdpa_kernel([member]):
            yield
    finally:
        _FORCED.reset(token)


def check_backend(backend: str, device: str) -> None:
    """cuDNN and memory-efficient attention exist only on CUDA; on MPS torch runs its own SDPA
    kernel whatever fused backend is asked for, so only auto and math mean what they say there."""
    backend = (backend or "auto").lower()
    if backend not in BACKEND_CHOICES:
        raise DeviceError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, not {backend!r}")
    if device == "mps" and backend in FUSED_BACKENDS:
        raise DeviceError(f"--backend {backend} cannot be forced on MPS (torch would run its own kernel "
                          f"instead, unannounced); use auto or math")
    if backend in ("cudnn", "efficient") and device != "cuda":
        raise DeviceError(f"--backend {backend} needs a CUDA device (this run is on {device}); "
                          f"use auto, flash or math")


def math_upcasts(dtype: str) -> bool:
    """Whether torch's math SDPA backend computes ``dtype`` ("bf16", "fp16") inputs in fp32.

    Checked in torch 2.13 (``aten::_scaled_dot_product_attention_math``, a composite kernel that every
    device but MPS shares): unless ``torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(True)``
    (off by default; it applies on the CPU too), q, k and v are converted to fp32 (``aten._to_copy``),
    the scores, the mask, the softmax and both bmm run in fp32, and the output is converted back;
    ``enable_gqa`` repeats K and V to the query heads (expand + clone) after the conversion. Builds
    without that switch are probed: one small math-backend call on the CPU, whose bmm dtype decides.
    """
    if dtype not in ("bf16", "fp16"):
        return False
    import torch

    allowed = getattr(torch.backends.cuda, "fp16_bf16_reduction_math_sdp_allowed", None)
    return _math_probe(dtype, None if allowed is None else bool(allowed()))


@functools.lru_cache(maxsize=None)
def _math_probe(dtype: str, reduction_allowed: Optional[bool]) -> bool:
    import torch
    import torch.nn.functional as F
    from .dispatch import Recorder

    class BmmDtypes(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.seen: set = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten.bmm.default:
                self.seen.add(out.dtype)
            return out

    q = torch.zeros(1, 2, 4, 8, dtype=torch_dtype(dtype))
    mode = BmmDtypes()
    try:
        with sdpa_context("math"), mode:
            F.scaled_dot_product_attention(q, q, q)
    except RuntimeError:  # no such dtype on this CPU build: assume what the switch says
        return reduction_allowed is False
    return torch.float32 in mode.seen


def _recorder_class():
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    class SdpaRecorder(TorchFunctionMode):
        """Notes the backend torch's selector picks for each SDPA call that passes through."""

        def __init__(self) -> None:
            super().__init__()
            self.seen: list = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is F.scaled_dot_product_attention:
                self.seen.append(_choice(torch, args, kwargs))
            return func(*args, **kwargs)

    return SdpaRecorder


def _choice(torch, args, kwargs) -> str:
    from torch.nn.attention import SDPBackend

    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    call = {**dict(zip(names, args)), **kwargs}
    q, k, v = call.pop("query"), call.pop("key"), call.pop("value")
    try:
        with torch._C.DisableTorchFunction():
            try:
                code = torch._fused_sdp_choice(q, k, v, **call)
            except TypeError:  # an older torch without enable_gqa
                call.pop("enable_gqa", None)
                code = torch._fused_sdp_choice(q, k, v, **call)
        return _SDP_NAMES.get(SDPBackend(code).name, str(code))
    except (AttributeError, RuntimeError, TypeError, ValueError):  # a torch without this selector, or a new code
        return getattr(getattr(q, "device", None), "type", "unknown") + "-default"


def sdpa_backends_used(fn: Callable[[], object]) -> Optional[str]:
    """Run ``fn`` once; the SDPA backend(s) it used ("flash", "cudnn", "math", ...; several
    joined by "+"), or None when it made no SDPA call."""
    rec = _recorder_class()()
    with rec:
        fn()
    names = list(dict.fromkeys(rec.seen))
    return "+".join(names) if names else None
