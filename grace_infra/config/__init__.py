"""The stack configuration, parsed once at the edge: `Pulumi.<stack>.yaml` read as the engine reads it
(stack_files.py), validated into one pydantic model (stack_config.py) over the model catalog
(catalog.py) and Kubernetes quantities (quantities.py), with the study CSVs an offline render reads
(input_files.py).

Imports only constants, errors and nrp.cluster_facts; every other layer may import it.
"""
