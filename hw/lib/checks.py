"""Argument checks for component constructors."""

from __future__ import annotations

__all__ = ["refuse"]


def refuse(component, message: str, exc: type[Exception] = ValueError):
    """Raise ``exc(message)`` from a component's constructor.

    Amaranth warns "created but never used" when an Elaboratable is garbage-collected without
    being elaborated; a constructor that refuses its arguments has not made a component, so
    that warning would only be noise (and an error under ``PYTHONWARNINGS=error``).
    """
    component._MustUse__silence = True
    raise exc(message)


def require_config(component, config) -> None:
    """Refuse anything but an :class:`hw.config.AcceleratorConfig` as ``config``."""
    from hw.config import AcceleratorConfig

    if not isinstance(config, AcceleratorConfig):
        refuse(component, f"config must be an AcceleratorConfig, got {type(config).__name__}",
               TypeError)
