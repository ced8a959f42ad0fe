"""Sampling layers: random keys, all-to-all exchanges, selection modes (see docs/sampling.md)."""

from .modes import (MODES, SampleMode, SamplingError, SelectContext, check_chain, check_mode,
                    make_mode, register_mode, round_half_up, row_keys)
from . import bootstrap, sample, split, stratified  # noqa: F401  (register the modes)

__all__ = ["MODES", "SampleMode", "SamplingError", "SelectContext", "check_chain", "check_mode",
           "make_mode", "register_mode", "round_half_up", "row_keys"]
