"""The `grace` commands (cli.py dispatches): render.py (offline, under Pulumi's mocks:
offline.py), preflight/, status.py, results/ and studies.py (study_check.py), with the options they
share (arguments.py), the plan they print (plan_report.py) and the one client that reads the live
cluster (kube_client.py).

May import every layer. Only render imports Pulumi (through offline.py); status and results start
without it.
"""
