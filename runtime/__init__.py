"""Runtime for compiled tile programs: schedule interpreter, kernels and noise models.

The executor arrives with the runtime issue; the compiler does not depend on this package.
"""
