"""Reports: one run's (``run``: Table 4 and Figure 1, written by the pipeline) and a sweep's
(``sweep``: ``ser report``, pooled over folds), drawn with one plotting core (``plots``)."""

from ser.report.sweep import main

__all__ = ["main"]
