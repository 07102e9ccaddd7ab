"""The tile pass's algorithms, one concern per module: `dense` cuts arrays into
tile-sized pieces (and groups onto block diagonals), `compaction` drops zero rows and
columns per column group, `layouts` chooses each array's column-group width and packing,
`packing` places pieces on virtual tiles. passes/tile.py is the pass that runs them."""
