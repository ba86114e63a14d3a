"""The fidelity file of `attncost fidelity --json`: a typed document, read by the reports.

Pure pydantic (no torch), like ``results.Run``. The writer is ``profiler.fidelity.fidelity_points``
(the fields of a point are described there); every number is finite.
"""

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from .jsonfile import load_document, validate_json
from .shape import Shape

SCHEMA = "attncost-fidelity"
SCHEMA_VERSION = 1

Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Count = Annotated[StrictInt, Field(ge=1)]


class FidelityFileError(ValueError):
    """A fidelity file that cannot be read or is not `attncost fidelity --json` output."""


class FidelityPoint(BaseModel):
    """One variant at one T on one kind of inputs, compared with exact attention."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    variant: str
    label: str  # the variant and the parameters that matter for fidelity: "linformer k=64"
    kind: Optional[str] = None  # reference | conversion | approximation | oracle | learned | skipped
    status: str  # ok | skipped | error | oom | oom-predicted
    reason: Optional[str] = None
    params: dict
    T: Count
    d: Optional[Count] = None
    heads: Optional[Count] = None
    head_dim: Optional[Count] = None
    batch: Optional[Count] = None
    inputs: str  # random | structured
    causal: StrictBool  # the causality the variant ran and was compared with
    seed: Optional[int] = None
    dtype: Optional[str] = None
    shape: Shape  # the point's own shape: estimate(variant, shape, params) costs it
    cosine_output: Optional[Finite] = None
    rel_error_output: Optional[Finite] = None
    cosine_attention: Optional[Finite] = None
    rel_error_attention: Optional[Finite] = None
    baseline_cosine_output: Optional[Finite] = None  # uniform attention over the visible keys
    baseline_rel_error_output: Optional[Finite] = None
    distill: Optional[dict] = None
    notes: list[str] = Field(default_factory=list)
    seconds: Optional[Finite] = None

    @model_validator(mode="after")
    def _measured(self) -> "FidelityPoint":
        if self.status == "ok" and self.cosine_output is None:
            raise ValueError("cosine_output: expected a number for a point with status ok")
        return self


class FidelitySettings(BaseModel):
    """The flags of the run that wrote the file."""

    model_config = ConfigDict(extra="allow")

    variants: Optional[list[str]] = None
    T: Optional[list[int]] = None
    d: Optional[int] = None
    heads: Optional[int] = None
    batch: Optional[int] = None
    causal: Optional[bool] = None
    params: Optional[dict] = None
    inputs: Optional[list[str]] = None
    distill_steps: Optional[int] = None
    seed: Optional[int] = None
    dtype: Optional[str] = None
    device: Optional[str] = None


class FidelityDoc(BaseModel):
    """A whole fidelity file: its schema, versions, settings and points."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    schema_id: Literal["attncost-fidelity"] = Field(alias="schema")
    schema_version: Literal[1]
    attncost_version: Optional[str] = None
    torch_version: Optional[str] = None
    settings: FidelitySettings = Field(default_factory=FidelitySettings)
    points: list[FidelityPoint]


def check_fidelity(doc: Union[dict, FidelityDoc], where: str = "the fidelity data") -> FidelityDoc:
    """A parsed fidelity document, typed; FidelityFileError with one sentence if it is not one."""
    return validate_json(doc, FidelityDoc,
                         lambda why: FidelityFileError(f"{where} is not an attncost fidelity file: {why}"))


def load_fidelity(path) -> FidelityDoc:
    """Read and validate a file written by `attncost fidelity --json`."""
    return load_document(path, FidelityDoc, "fidelity file", FidelityFileError)


__all__ = ["SCHEMA", "SCHEMA_VERSION", "FidelityFileError", "FidelityPoint", "FidelitySettings", "FidelityDoc",
           "check_fidelity", "load_fidelity"]
