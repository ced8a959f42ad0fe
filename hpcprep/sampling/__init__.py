"""Sampling layers: random keys, all-to-all exchanges, selection modes."""

from .modes import MODES, SampleMode, SelectContext, check_mode, make_mode, register_mode

__all__ = ["MODES", "SampleMode", "SelectContext", "check_mode", "make_mode", "register_mode"]
