"""The release of epic_hf, written into every bank it saves."""

__version__ = "0.2.0"
