"""Experiments that measure a paper's claim with this library (several seeds, several arms)."""
