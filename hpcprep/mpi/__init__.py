"""The MPI layer: agreeing on errors (:mod:`.agree`) and the named message tags (:mod:`.tags`)."""
