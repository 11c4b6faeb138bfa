"""Grace's Pulumi component library: the NRP stack for LLM experiments as one dependency graph."""
