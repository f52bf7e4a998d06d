"""Oracles independent of the engine's closed forms: mpmath quadrature, Monte Carlo, PPCA/FA Gaussians."""
