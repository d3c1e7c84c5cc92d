"""The scripts that regenerate the figures under docs/ (one per family, lib.sh says how they are called) and
the comparison `make figures-check` runs on what they write (compare.py)."""
