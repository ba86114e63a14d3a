"""The torch side of attncost: each variant as an nn.Module running the ops its cost-model graph
lists (``modules``), and FLOP counters to check the analytic counts against (``counting``).

Importing this package does not import torch; the names below load their module on first use,
so that commands which never profile (``attncost predict``) never pay for torch.
"""

_LAZY = {
    "build_module": "modules",
    "AttentionModule": "modules",
    "count": "counting",
    "count_detailed": "counting",
    "crosscheck": "counting",
    "CrossCheck": "counting",
    "CountDetail": "counting",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
