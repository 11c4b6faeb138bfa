"""Unit tests of the Pulumi program (grace_infra); shared helpers live in `support.py`."""
