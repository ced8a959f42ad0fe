"""The input layer: file discovery, chunk plans and chunked readers."""

from .plan import ChunkDesc, InputPlan, build_input_plan
from .readers import read_chunk

__all__ = ["ChunkDesc", "InputPlan", "build_input_plan", "read_chunk"]
