"""Standardization steps (DESIGN §3), registered by ``op`` name."""

from . import (categorical, dedup, dropna, impute, outliers, reduce, scale, select,  # noqa: F401
               validate)  # (importing registers the steps)
from .base import STEPS, LayerContext, Step, make_step, merge_by_chunk, register_step
from .moments import Moments

__all__ = ["STEPS", "LayerContext", "Moments", "Step", "make_step", "merge_by_chunk",
           "register_step"]
