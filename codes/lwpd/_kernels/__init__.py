"""Private compute kernels: ``cpu`` (Numba ``@njit``). Public modules validate, then dispatch here."""
