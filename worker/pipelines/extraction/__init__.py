"""`python -m worker extract`: the extraction pipeline (extraction_pipeline.py) and the structured-output
form a server really enforces, found by asking it once (backend.py)."""
