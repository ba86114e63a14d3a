"""The hardware profile a report draws with, and the cost model on it.

A run's profile is the one embedded in its results file (``Run.hardware``), else the built-in
profile it names; a report never looks for a profile file, so a results file gives the same
report wherever it lies. An explicit profile (``attncost report --hardware``) overrides both.
"""

from dataclasses import dataclass
from typing import Optional, Union

from ..costmodel.estimate import Estimate, estimate_many
from ..costmodel.hardware import Hardware, HardwareError, get_hardware, hardware_names
from ..costmodel.results import Run
from ..costmodel.shape import Shape
from ..costmodel.variants import REGISTRY


@dataclass
class HardwareInfo:
    """What the report needs from a hardware profile: ceilings and a name."""

    name: str
    peak_flops: dict  # dtype -> FLOP/s
    bandwidth: Optional[float]  # bytes/s
    memory: Optional[float]  # bytes
    profile: Optional[Hardware] = None  # the profile itself, for the cost model
    description: str = ""

    @property
    def fitted(self) -> bool:
        """The profile's efficiencies were fitted to measurements on its device (``attncost
        calibrate``, or the built-in h100's fit), not assumed."""
        return self.profile is not None and self.profile.calibrated

    def measured_ceiling(self, dtype: str) -> Optional[tuple]:
        """(FLOP/s, bytes/s) a fitted profile says its device reaches: the matmul peak times the
        fitted efficiency of large matmuls (``MatmulEfficiency.max_eff``), the bandwidth times the
        fitted share a large copy reaches (``Hardware.mem_efficiency``); None for a profile whose
        efficiencies are assumed."""
        peak = self.peak(dtype)
        if not self.fitted or not peak or not self.bandwidth:
            return None
        return peak * self.profile.matmul_eff(dtype).max_eff, self.bandwidth * self.profile.mem_efficiency

    def peak(self, dtype: str) -> Optional[float]:
        """The matmul ceiling for ``dtype`` (the profile's own rule where it has one)."""
        if self.profile is not None:
            try:
                return float(self.profile.tensor_peak(dtype))
            except (KeyError, HardwareError):  # a dtype the profile has no peak for: the rule below
                pass
        if not self.peak_flops:
            return None
        return self.peak_flops.get(dtype) or self.peak_flops.get("bf16") or max(self.peak_flops.values())


def hardware_info(hw: Union[Hardware, HardwareInfo, str, None]) -> Optional[HardwareInfo]:
    """Wrap a Hardware profile for the report. A string is an explicit choice, a built-in name
    or a profile file (``get_hardware``); None where it names no profile."""
    if hw is None or isinstance(hw, HardwareInfo):
        return hw
    if isinstance(hw, str):
        try:
            hw = get_hardware(hw)
        except HardwareError:  # an unknown profile only costs the report its ceilings, not the page
            return None
    peaks = {str(k): float(v) for k, v in hw.peak_flops.items() if v > 0}
    return HardwareInfo(hw.name, peaks, float(hw.mem_bandwidth), float(hw.mem_bytes), hw, hw.description)


def run_hardware(run: Run) -> Optional[HardwareInfo]:
    """The profile ``run`` was predicted with: embedded in it, else the built-in of the name it
    records; None for a profile file that the run does not embed."""
    if run.hardware is not None:
        return hardware_info(run.hardware)
    name = (run.environment.hardware_profile or "").strip().lower()
    return hardware_info(get_hardware(name)) if name in hardware_names() else None


def estimate_on(variant: str, shape: Shape, params: dict, hw: Optional[HardwareInfo]) -> Optional[Estimate]:
    """The cost model at one point, with time where a hardware profile is known. None where the
    model cannot evaluate it (a variant from another version, parameters out of range)."""
    if variant not in REGISTRY:
        return None
    try:
        return estimate_many(variant, [shape], params, hw.profile if hw is not None else None)[0]
    except (ValueError, TypeError):  # VariantError, pydantic's ValidationError, params of the wrong kind
        return None
