"""Analyses of the baseline (sensitivity, bit sweep): one module per analysis plugin."""

from compress.analysis.base import (
    AnalysisConfig,
    AnalysisContext,
    AnalysisResult,
    parse_analysis,
)

__all__ = ["AnalysisConfig", "AnalysisContext", "AnalysisResult", "parse_analysis"]
