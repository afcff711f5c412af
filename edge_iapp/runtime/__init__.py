"""The runtime: ``Classifier`` (bundle + backend -> ChromosomeResult). No torch here.

Names are resolved on first use so that importing this package stays cheap.
"""

from __future__ import annotations

__all__ = ["ChromosomeResult", "Classifier", "ReviewPolicy"]


def __getattr__(name: str):
    if name == "Classifier":
        from .classifier import Classifier

        return Classifier
    if name == "ChromosomeResult":
        from .result import ChromosomeResult

        return ChromosomeResult
    if name == "ReviewPolicy":
        from .review import ReviewPolicy

        return ReviewPolicy
    raise AttributeError(f"module 'edge_iapp.runtime' has no attribute {name!r}")
