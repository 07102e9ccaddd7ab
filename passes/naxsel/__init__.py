"""The nax pass's algorithms: per-layer cost tables per tile type (`tables`), the
analytic error proxy (`proxy`) and the search for each layer's tile type (`search`)."""
