"""The tile IR grammar (xbar.lark) and its reference (SPEC.md), shipped as package data."""
