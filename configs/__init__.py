"""Phase configs for jaxlm (ml_collections; see configs/common.py)."""
