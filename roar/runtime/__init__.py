"""The run machinery every stage relies on: the stage cache (cache.py), files that are never half-written
(files.py), CPU threads (threads.py), Ctrl-C and SIGTERM (interrupt.py), what a run prints (console.py) and
how runs and sweeps are named (sweep.py)."""
