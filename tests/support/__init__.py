"""Test support shared by the worker's unit tests, the benchmark and the other pipelines' tests."""
