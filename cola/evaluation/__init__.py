"""Asking a task's samples through chains: the evaluator, chain and router evaluations, provenance, statistics."""
