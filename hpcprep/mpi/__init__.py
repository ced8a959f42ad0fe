"""The MPI layer: agreeing on errors (:mod:`.agree`), the named message tags (:mod:`.tags`),
moving rows between ranks (:mod:`.exchange`)."""
