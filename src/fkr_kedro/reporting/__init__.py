"""Figures, findings and the HTML report, from the pipelines' tidy tables.

Knows nothing of Kedro; ``fkr_kedro.pipelines.report`` connects it to the catalog.
"""
