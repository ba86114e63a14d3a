"""attncost: what an attention layer really costs, before you build it and on your own GPU."""

__version__ = "0.1.0"
