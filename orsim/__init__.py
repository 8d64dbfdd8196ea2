"""orsim: a simulated Genesys Orchestration Server (ORS) cluster."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
