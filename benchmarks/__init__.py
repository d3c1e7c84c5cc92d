"""`make bench`: speed and memory checks, run as `python -m benchmarks [name ...]`."""
