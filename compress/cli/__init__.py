"""Every entry point (compress, compress-report, compress-search, compress-rerun): the only
Hydra- and argparse-aware code, with one exit-code policy (`exits`).
"""
