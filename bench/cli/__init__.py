"""The command line: `main` (the commands), the grammar (`parser`), argument types and checks (`arguments`,
`backbone_weights`). The top layer: it may import every other."""

from bench.cli.main import main

__all__ = ["main"]
