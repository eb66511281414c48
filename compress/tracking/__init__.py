"""MLflow: one run per job, a parent per sweep (Hydra callback), provenance tags, and the store
every command opens.
"""
