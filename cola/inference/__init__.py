"""Decoding and scoring through a chain: the one decoding loop and option log-likelihoods."""
