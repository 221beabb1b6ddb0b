"""Stock levels per warehouse."""
