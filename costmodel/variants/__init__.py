"""The registry of attention variants: their names are the public interface."""

from . import exact, latent, learned, lowrank
from .base import Params, Variant, VariantError

REGISTRY = {v.name: v for mod in (exact, latent, lowrank, learned) for v in mod.VARIANTS}
NAMES = tuple(REGISTRY)

__all__ = ["REGISTRY", "NAMES", "Params", "Variant", "VariantError"]
