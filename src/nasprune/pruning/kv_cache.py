"""Tracing a Hugging Face causal language model without its key/value cache.

Generation state is not an output whose channels matter: traced, the cache's
concatenations break DepGraph's index mappings and tie the k/v projections to returned
tensors. ``build_graph`` traces with the cache off and restores the user's setting.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from torch import nn


@contextmanager
def no_kv_cache(model: nn.Module) -> Iterator[None]:
    """Trace a Hugging Face model without its key/value cache (``config.use_cache``).

    The cache is state for generation, not an output: tracing it would tie the k/v
    projections to returned tensors and run DepGraph through the cache's concatenations.
    """
    config = getattr(model, "config", None)
    cached = getattr(config, "use_cache", None)
    if isinstance(cached, bool):
        config.use_cache = False
    try:
        yield
    finally:
        if isinstance(cached, bool):
            config.use_cache = cached


def without_cache_flag(example_inputs: object) -> object:
    """``example_inputs`` without an explicit ``use_cache=True`` (see ``no_kv_cache``)."""
    if isinstance(example_inputs, Mapping) and example_inputs.get("use_cache") is True:
        return {**example_inputs, "use_cache": False}
    return example_inputs


__all__ = ["no_kv_cache", "without_cache_flag"]
