"""dgnexact verifier: checks Theorem 1 and the posterior against independent oracles."""
