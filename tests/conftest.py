"""Hypothesis profiles ``ci`` / ``dev`` / ``fuzz`` (see verify.strategies), picked by $HYPOTHESIS_PROFILE."""

from verify.strategies import register_profiles

register_profiles()
