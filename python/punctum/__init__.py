"""punctum: read the HDF5 files a punctum sweep writes, as pandas and xarray objects,
and render a self-contained HTML report (``python -m punctum report FILE.h5``)."""
from ._store import PunctumFormatError
from .reader import PunctumFile, SeqTokens, open  # noqa: A004

__version__ = "0.1.0"
__all__ = ["open", "PunctumFile", "SeqTokens", "PunctumFormatError", "__version__"]
