"""The layers of the dataflow: chunk streams, standardization and sampling layers."""
