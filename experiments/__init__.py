"""The paper-claim experiments behind docs/RESULTS.md (not part of the installed package).

`cells` defines the sweep's cells, `sweep` runs them (`python experiments/sweep.py px|tradi|all`),
`resumable` resumes a cell at its last finished epoch, `report` writes docs/RESULTS.md from their
JSON (`python experiments/report.py`).
"""
