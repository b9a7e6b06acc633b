"""ML weights and packages: the model catalogue (catalog), fetching and pinning model
files (models), the BERT to GGUF converter (convert) and the wheelhouse of inference
packages (wheelhouse).
"""
