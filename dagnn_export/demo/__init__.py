"""``dagnn demo``: train, export, index and query the embedded MIRFlickr subset (``data/mirflickr-mini``),
timed per stage, with an HTML report. ``pipeline`` runs the stages, ``stages`` holds the query, metrics and
figure stages, ``indexes`` fills and searches the indexes, ``render`` draws the terminal output and
``report`` writes report.html."""
from ..errors import DemoError
from .pipeline import DATA_DIR, FULL, QUICK, Plan, run_demo

__all__ = ["DATA_DIR", "DemoError", "FULL", "QUICK", "Plan", "run_demo"]
