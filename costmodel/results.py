"""The results file of `attncost profile`: one `Run`, written atomically point by point.

Pure pydantic (no torch), shared by the profiler that writes it and the reports that read it. A
Run embeds the hardware profile its predictions were made with, so a report does not depend on
where the file lies.
"""

import json
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from .atomic import write_atomic
from .hardware import Hardware
from .shape import Shape
from .units import Dtype

SCHEMA_VERSION = 1
# A point that ran out of memory ("oom") or was not run because its predicted memory exceeds the
# device's free memory ("oom-predicted"): reports count both as out of memory.
OOM_STATUSES = ("oom", "oom-predicted")
Status = Literal["ok", "oom", "oom-predicted", "error", "n/a"]


class Environment(BaseModel):
    model_config = ConfigDict(extra="allow")

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

    median_s: float
    p10_s: float
    p90_s: float
    repetitions: int
    min_s: Optional[float] = None
    ci_rel: Optional[float] = None  # half-width of the ~95% confidence interval of the median / median
    stable: Optional[bool] = None  # ci_rel reached the target before the time budget ran out


class Counts(BaseModel):
    """FLOPs of one point from each counter, all as 2 x MACs, with what each skipped."""

    analytic: float
    analytic_matmul: float
    # the analytic matmuls with fused causal cores counted dense: what FlopCounterMode counts
    analytic_matmul_dense: Optional[float] = None
    fvcore: Optional[float] = None
    flop_counter: Optional[float] = None
    fvcore_skipped: dict = Field(default_factory=dict)  # op name -> occurrences
    flop_counter_skipped: list = Field(default_factory=list)


class Point(BaseModel):
    """One (variant, params, shape, phase) measurement beside its prediction."""

    variant: str
    params: dict = Field(default_factory=dict)
    shape: Shape
    backend: Optional[str] = None  # SDPA backend that really ran, where one did
    # the dtype the attention core computed in, where it differs from shape.dtype: "fp32" where
    # torch's math SDPA backend upcast bf16/fp16 inputs (``profiler.device.math_upcasts``)
    compute_dtype: Optional[Dtype] = None
    status: Status = "ok"
    message: Optional[str] = None
    predicted_time_s: Optional[float] = None
    predicted_flops: Optional[float] = None
    predicted_activation_bytes: Optional[float] = None
    timing: Optional[Timing] = None
    peak_memory_bytes: Optional[float] = None  # allocator peak above the inputs
    counts: Optional[Counts] = None
    # -- whole-model points (`attncost profile --model`); None on the points of a layer sweep.
    # ``shape`` is then the model's prefill shape (T tokens, its d and heads); ``timing`` and
    # ``predicted_time_s`` the prefill's, i.e. the time to first token; decode: one new token per
    # sequence against each layer's cache of T tokens.
    model: Optional[str] = None  # preset name or model file
    logits: Optional[Literal["all", "last"]] = None  # the prefill's LM head rows
    new_tokens: Optional[int] = None  # decode steps per timed call
    ttft_s: Optional[float] = None  # measured: median prefill time
    predicted_ttft_s: Optional[float] = None
    decode_timing: Optional[Timing] = None  # one decode step (all sequences), per token
    decode_s_per_token: Optional[float] = None  # measured median decode step
    decode_tokens_per_s: Optional[float] = None  # measured: batch / decode_s_per_token
    predicted_decode_s_per_token: Optional[float] = None
    predicted_decode_tokens_per_s: Optional[float] = None
    predicted_memory_bytes: Optional[float] = None  # weights + KV cache + prefill activations

    @property
    def key(self) -> str:
        """Identity of the point for --resume (a layer point's key ignores the model fields)."""
        ident = [self.variant, self.params, self.shape.model_dump()]
        if self.model is not None:
            ident += [self.model, self.logits, self.new_tokens]
        return json.dumps(ident, sort_keys=True)


class Run(BaseModel):
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

    @classmethod
    def load(cls, path) -> "Run":
        return cls.model_validate_json(Path(path).read_text())
