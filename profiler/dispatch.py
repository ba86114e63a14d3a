"""The base of attncost's dispatch-level recorders (op counts, live bytes, SDPA dtypes, op traces).

torch wraps every ``TorchDispatchMode.__torch_dispatch__`` in ``torch._disable_dynamo`` so that
``torch.compile`` skips those frames, and that wrapper imports ``torch._dynamo`` on its first call:
about 3 s of every short profiling process. attncost's recorders never run compiled code inside
their dispatch, so they opt out, as torch's own docstring of ``_should_skip_dynamo`` describes.
"""

from torch.utils._python_dispatch import TorchDispatchMode


class Recorder(TorchDispatchMode):
    """A ``TorchDispatchMode`` that does not import ``torch._dynamo`` when it first dispatches."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False
