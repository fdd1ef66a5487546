"""The version of CoLa (one place: the package and every recorded result read it)."""

__version__ = "0.1.0"
