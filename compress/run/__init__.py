"""The pipeline: one experiment from config to measured, tracked result."""
