"""Search spaces by name: ``search(space=...)``, ``nasprune search --space`` and configs.

``per-group`` (the default) searches one keep ratio per channel group; ``stage`` ties the
ratios of each stage (:mod:`.stage_space`), a lower-dimensional space that learns in fewer
trials; ``blocks`` adds a keep/drop gene per Transformer layer or residual block to the
per-group ratios (:mod:`.block_space`). All take the same arguments and project onto a
budget just as exactly.
"""

from __future__ import annotations

from typing import Any

from nasprune.registry import Registry
from nasprune.search.block_space import BlockSpace
from nasprune.search.space import SearchSpace
from nasprune.search.stage_space import StageSpace

SPACES: Registry[type[SearchSpace]] = Registry("search space")
for _cls in (SearchSpace, StageSpace, BlockSpace):
    SPACES.register(_cls.kind)(_cls)


def space_names() -> list[str]:
    """Every name ``search(space=...)`` and ``--space`` accept."""
    return SPACES.names()


def make_space(name: str, model: Any, example_inputs: Any, **kwargs: Any) -> SearchSpace:
    """The search space called ``name`` (``SearchSpace``'s arguments) for ``model``."""
    return SPACES.get(name)(model, example_inputs, **kwargs)


__all__ = ["SPACES", "make_space", "space_names"]
