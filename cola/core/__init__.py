"""The model side: chains, model families, loading, the executor (one layer loop, one cache slot per chain position), packed rows, batch-invariant products, the prefix cache, export."""
