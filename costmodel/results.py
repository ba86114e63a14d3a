"""The results file of `attncost profile`: one `Run`, written atomically point by point.

Pure pydantic (no torch), shared by the profiler that writes it and the reports that read it. A
Run embeds the hardware profile its predictions were made with, so a report does not depend on
where the file lies. Every number is finite and none is negative. A file is checked as a
``RunFile``, stricter than a Run built in memory: its schema version is this attncost's, it has
points, and each point names a known variant with parameters that variant has.
"""

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import __version__
from .atomic import write_atomic
from .hardware import Hardware
from .jsonfile import validation_reason
from .shape import Shape
from .timing import MODES
from .units import Dtype
from .variants import NAMES, REGISTRY

SCHEMA_VERSION = 1
# A point that ran out of memory ("oom") or was not run because its predicted memory exceeds the
# device's free memory ("oom-predicted"): reports count both as out of memory.
OOM_STATUSES = ("oom", "oom-predicted")
Status = Literal["ok", "oom", "oom-predicted", "error", "n/a"]
FINITE = ConfigDict(allow_inf_nan=False)


def _zero_or(low: float, high: float, unit: str) -> AfterValidator:
    """0, or a number from ``low`` to ``high``: ratios and logarithms of two of them stay finite."""
    def check(x: float) -> float:
        if x != 0 and not low <= x <= high:
            raise ValueError(f"must be 0 or between {low:g} and {high:g} {unit}, not {x:g}")
        return x
    return AfterValidator(check)


Seconds = Annotated[float, Field(ge=0), _zero_or(1e-12, 1e9, "seconds")]
Amount = Annotated[float, Field(ge=0), _zero_or(1.0, 1e40, "(FLOPs or bytes)")]
PerSecond = Annotated[float, Field(ge=0), _zero_or(1e-12, 1e21, "per second")]


class Environment(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    device: str  # "cuda" | "mps" | "cpu"
    device_name: str = ""
    driver: Optional[str] = None
    torch: Optional[str] = None
    cuda: Optional[str] = None
    python: Optional[str] = None
    platform: Optional[str] = None
    hardware_profile: Optional[str] = None  # name or file of the profile used for predictions
    sdpa_backend_requested: Optional[str] = None  # --backend of a layer sweep: "auto" or a forced one
    sdpa_backend: Optional[str] = None  # the SDPA backends that really ran, joined by "+"


class Timing(BaseModel):
    """Wall-clock of one point, in seconds."""

    model_config = FINITE

    median_s: Seconds
    p10_s: Seconds
    p90_s: Seconds
    repetitions: int = Field(..., ge=1)
    min_s: Optional[Seconds] = None
    ci_rel: Optional[float] = Field(None, ge=0)  # half-width of the ~95% confidence interval of the median / median
    stable: Optional[bool] = None  # ci_rel reached the target before the time budget ran out


class Counts(BaseModel):
    """FLOPs of one point from each counter, all as 2 x MACs, with what each skipped."""

    model_config = FINITE

    analytic: Amount
    analytic_matmul: Amount
    # the analytic matmuls with fused causal cores counted dense: what FlopCounterMode counts
    analytic_matmul_dense: Optional[Amount] = None
    fvcore: Optional[Amount] = None
    flop_counter: Optional[Amount] = None
    fvcore_skipped: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)  # op name -> occurrences
    flop_counter_skipped: list[str] = Field(default_factory=list)


class Point(BaseModel):
    """One (variant, params, shape, phase) measurement beside its prediction."""

    model_config = FINITE

    variant: str
    params: dict = Field(default_factory=dict)
    shape: Shape
    backend: Optional[str] = None  # attention kernel that really ran: an SDPA backend, or "flex"
    exec_mode: Literal[MODES] = "eager"  # ``timing.MODES``: the host issued each op, or a CUDA graph replayed them
    # the dtype the attention core computed in, where it differs from shape.dtype: "fp32" where
    # torch's math SDPA backend upcast bf16/fp16 inputs (``profiler.device.math_upcasts``)
    compute_dtype: Optional[Dtype] = None
    status: Status = "ok"
    message: Optional[str] = None
    predicted_time_s: Optional[Seconds] = None
    predicted_flops: Optional[Amount] = None
    predicted_activation_bytes: Optional[Amount] = None
    timing: Optional[Timing] = None
    peak_memory_bytes: Optional[Amount] = None  # allocator peak above the inputs
    counts: Optional[Counts] = None
    predicted_time_other_s: Optional[Seconds] = None  # predicted in the other exec mode
    # the reference workload's time (``profiler.pace``) timed beside the point (in its rounds: the fastest),
    # to compare with the profile's ``Hardware.pace_s``: the machine's pace when the point ran
    pace_s: Optional[Seconds] = None
    # ``profile --ops``: seconds per call by op kind (``costmodel.opkinds``), from torch.profiler: the
    # host's self time in each aten op, and (CUDA) the device time of the kernels each launched
    op_times: Optional[dict[str, Seconds]] = None
    op_device_times: Optional[dict[str, Seconds]] = None
    # the profiled call's own time (median over the calls): longer than ``timing``'s by the profiler's cost
    op_call_s: Optional[Seconds] = None
    # ``profile --ops`` on a CPU: bytes of memory faulted in per call (``harness.fault_bytes``)
    fault_bytes: Optional[Amount] = None
    # -- whole-model points (`attncost profile --model`); None on the points of a layer sweep.
    # ``shape`` is then the model's prefill shape (T tokens, its d and heads); ``timing`` and
    # ``predicted_time_s`` the prefill's, i.e. the time to first token; decode: one new token per
    # sequence against each layer's cache of T tokens.
    model: Optional[str] = None  # preset name or model file
    logits: Optional[Literal["all", "last"]] = None  # the prefill's LM head rows
    new_tokens: Optional[int] = Field(None, ge=1)  # decode steps per timed call
    ttft_s: Optional[Seconds] = None  # measured: median prefill time
    predicted_ttft_s: Optional[Seconds] = None
    decode_timing: Optional[Timing] = None  # one decode step (all sequences), per token
    decode_s_per_token: Optional[Seconds] = None  # measured median decode step
    decode_tokens_per_s: Optional[PerSecond] = None  # measured: batch / decode_s_per_token
    predicted_decode_s_per_token: Optional[Seconds] = None
    predicted_decode_tokens_per_s: Optional[PerSecond] = None
    predicted_memory_bytes: Optional[Amount] = None  # weights + KV cache + prefill activations
    # -- distributed points (`attncost profile --cp N` / `--tp N`); None on single-device points.
    # ``timing`` is the slowest rank's; ``predicted_time_s`` a device's (``costmodel.parallel``).
    cp: Optional[int] = Field(None, ge=1)  # ranks the sequence is split over
    cp_kind: Optional[Literal["ring", "ulysses"]] = None
    tp: Optional[int] = Field(None, ge=1)  # ranks the heads are split over
    sequence_parallel: Optional[bool] = None  # with tp: reduce-scatter + all-gather for the all-reduce
    rank_times_s: Optional[list[Seconds]] = None  # each rank's median time, by rank
    rank_bytes_sent: Optional[list[Amount]] = None  # bytes each rank sent to the others in one call
    predicted_bytes_sent: Optional[Amount] = None

    @property
    def key(self) -> str:
        """Identity of the point for --resume (a layer point's key ignores the model fields; an eager
        point's, its exec mode, so that files written before exec modes keep their keys)."""
        ident = [self.variant, self.params, self.shape.model_dump()]
        if self.exec_mode != "eager":
            ident.append(self.exec_mode)
        if self.model is not None:
            ident += [self.model, self.logits, self.new_tokens]
        if self.cp is not None:
            ident += [self.cp, self.cp_kind]
        if self.tp is not None:
            ident += ["tp", self.tp, bool(self.sequence_parallel)]
        return json.dumps(ident, sort_keys=True)


class Run(BaseModel):
    model_config = FINITE

    schema_version: int = SCHEMA_VERSION
    attncost_version: str = __version__
    name: str = ""
    command: str = ""  # the exact command line that produced it
    created: str = ""
    environment: Environment
    dtype: str = "bf16"
    hardware: Optional[Hardware] = None  # the profile the predictions were made with
    points: list[Point] = Field(default_factory=list)

    def save(self, path) -> None:
        """Write atomically: a temporary file beside the target, then rename over it."""
        write_atomic(Path(path), self.model_dump_json(indent=1))

    @field_validator("schema_version")
    @classmethod
    def _this_version(cls, version: int) -> int:
        if version != SCHEMA_VERSION:
            raise ValueError(f"this attncost ({__version__}) reads version {SCHEMA_VERSION} files, not "
                             f"version {version}")
        return version

    @classmethod
    def load(cls, path) -> "Run":
        """A results file as a Run, checked as a ``RunFile`` first (OSError, or ValueError naming
        what is wrong)."""
        text = Path(path).read_text()
        RunFile.model_validate_json(text)
        return cls.model_validate_json(text)


class StoredPoint(Point):
    """A point read from a file: its variant is one attncost knows, its parameters that variant's."""

    @model_validator(mode="after")
    def _known_variant(self) -> "StoredPoint":
        variant = REGISTRY.get(self.variant)
        if variant is None:
            raise ValueError(f"unknown variant {self.variant!r} (attncost's: {', '.join(NAMES)})")
        try:
            variant.params(**self.params)
        except ValidationError as err:
            raise ValueError(f"params of {self.variant}: {validation_reason(err)}") from None
        return self


class RunFile(Run):
    """A Run read from a results file (``Run.load``, ``cli.options.load_run``): ``points`` must be
    there and be ``StoredPoint``s; a calibration file (``attncost calibrate``'s rows) is named as one."""

    points: list[StoredPoint]

    @model_validator(mode="before")
    @classmethod
    def _not_calibration_rows(cls, data):
        if isinstance(data, dict) and "points" not in data and "rows" in data:
            raise ValueError("it holds the measurements of `attncost calibrate` (rows), not the points of "
                             "`attncost profile`")
        return data
