"""Dataset format readers: one module per on-disk format, each with `load(arg, split) -> Table`."""
