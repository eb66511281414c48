"""Reading runs back from MLflow (records), grouping them into configurations over seeds
(aggregate, the one groupby), and writing reports (render, Pareto).
"""
