"""ML weights and packages: the model catalogue, fetching and pinning model files, the
wheelhouse of inference packages, and the BERT to GGUF converter."""
