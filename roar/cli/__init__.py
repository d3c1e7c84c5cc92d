"""The two commands: `roar` (app.py) and `roar-report` (report.py, with --agreement in agreement.py)."""
