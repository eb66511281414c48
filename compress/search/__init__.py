"""compress-search: the smallest model within a delta of the baseline, searched with Optuna
over prune amounts and weight bits; trials are pipeline runs.
"""
