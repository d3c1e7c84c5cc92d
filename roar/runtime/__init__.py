"""The run machinery every stage relies on: the stage cache (cache.py), files that are never half-written
(files.py), CPU threads (threads.py), Ctrl-C and SIGTERM (interrupt.py) and what a run prints
(console.py)."""
