"""The stages of one run, in dataflow order: read -> standardize -> sample -> write -> commit.

Each stage is a function of the run's :class:`~hpcprep.stages.context.RunContext`
and what the stage before it hands on; :func:`hpcprep.pipeline.run_pipeline`
wires them. A stage adds its own part of ``report.json`` and charges its time
to the run's :class:`~hpcprep.stages.context.Clock`.
"""
