"""The National Research Platform's cluster as data (cluster_facts.py): GPU kinds and their resource
names, storage classes, each fact with its public source.

The lowest layer: imports nothing of ours, and any module may read it. The rules NRP imposes on a stack
are functions over the config, the plan and the manifests, so they sit above those layers, in
grace_infra/nrp_rules.py.
"""
