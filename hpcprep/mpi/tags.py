"""Tags of the point-to-point messages: every ``tag=`` in hpcprep names one of these.

Two messages on the same link with different meanings must never share a tag.
"""

#: The feature names an upstream rank sends once down a link before its chunks.
FEATURE_NAMES = 6
#: A chunk's header and array buffers on a one-to-one link (:func:`hpcprep.mpi.exchange.send_chunk`).
CHUNK = 7
