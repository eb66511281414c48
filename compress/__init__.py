"""compress: a lab for compressing neural networks, measured for real."""
