"""Deliberately wrong foreign implementations (``fn(model, X) -> claims``) that the fuzzer must catch.

Each wraps dgnexact's exact pipeline (:func:`exact_terms`) and corrupts exactly one aspect:

* ``missing_region.claims``        drops the region of smallest prior mass from the sum of eq. 5;
* ``dropped_second_moment.claims`` posterior covariance without the between-region spread term;
* ``logspace_underflow.claims``    p(x) = sum exp(log terms) in linear space (underflows in the tails);
* ``duplicate_units.claims``       merges units with the same hyperplane by dropping the copies.
"""
