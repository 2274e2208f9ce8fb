"""VirtualMLE: a virtual ML engineer that tunes sequential recommenders."""

__version__ = "0.1.0"
