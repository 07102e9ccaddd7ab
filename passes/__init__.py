"""Compiler passes over the tile IR, and the pass manager that runs pipeline strings."""
