"""mmcache's benchmark suite: ``python -m benchmarks --help``; see README.md."""
