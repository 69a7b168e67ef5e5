"""punctum: read the HDF5 files a punctum sweep writes, as pandas and xarray objects,
render a self-contained HTML report (``python -m punctum report FILE.h5``), and measure
published phenomena on a sweep (attention sinks, massive activations, punctuation vs
other tokens: ``punctum.literature``)."""
from ._store import PunctumFormatError
from .literature import massive_census, punct_vs_other, sink_share
from .reader import PunctumFile, SeqTokens, open  # noqa: A004

__version__ = "0.1.0"
__all__ = ["open", "PunctumFile", "SeqTokens", "PunctumFormatError", "sink_share",
           "massive_census", "punct_vs_other", "__version__"]
