"""The core table as a stack of layers (docs/DESIGN.md lists them, bottom up)."""
