"""Proxy selection utilities (METHOD §3.4)."""

from ccpdml.proxies.k_center import greedy_k_center

__all__ = ["greedy_k_center"]
