"""Imports every command module so that each registers itself on the app."""

from . import predict  # noqa: F401
from . import report  # noqa: F401
from . import profile, calibrate  # noqa: F401
from . import crosscheck  # noqa: F401
from . import fidelity  # noqa: F401
