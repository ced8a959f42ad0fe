"""The input layer: file discovery, chunk plans and chunked readers."""

from .plan import ChunkDesc, InputPlan, build_input_plan

__all__ = ["ChunkDesc", "InputPlan", "build_input_plan"]
