"""mlseclab: a secure machine-learning lab as code."""

__version__ = "0.1.0"
