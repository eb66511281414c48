"""Measurement probes: extra views of the baseline and the compressed model (one module each).

A probe is a `ProbeConfig` subclass with a `name` in a module of this package; listing its
name in `measure.probes` turns it on. See `base.py` for what a probe receives and returns.
"""
