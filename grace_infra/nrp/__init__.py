"""The National Research Platform: its cluster as data (cluster_facts.py, each fact with its public
source) and its usage rules as functions over a parsed config (rules.py).

cluster_facts.py is the lowest layer: it imports nothing of ours and any module may read it. rules.py
checks the config, the plan and the rendered containers, so it imports config/, planning/ and
manifests/; only components/ and commands/ import it.
"""
