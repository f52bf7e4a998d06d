"""Fuzzing campaigns: run the hypothesis properties of :mod:`verify.properties` until a budget is spent.

See :mod:`verify.fuzzing.campaign` (``run_campaign``, ``run_chunk``, ``parse_budget``) and the commands
``python -m verify fuzz`` / ``python -m verify replay``.
"""

from .campaign import CASE_FORMAT, CampaignResult, load_case, parse_budget, run_campaign, run_chunk

__all__ = ["CASE_FORMAT", "CampaignResult", "load_case", "parse_budget", "run_campaign", "run_chunk"]
