"""The interface: HDF5 shards, the master file, the manifest (docs/FORMAT.md)."""

from .location import OutputLocation
from .master import write_master
from .shards import ShardWriter
from .verify import verify_dataset

__all__ = ["OutputLocation", "ShardWriter", "verify_dataset", "write_master"]
