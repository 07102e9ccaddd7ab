"""BasisN's algorithms: basis learning and coefficient fitting (`fit.py`); the basis pass
(`passes/basis.py`) is their thin shell."""
