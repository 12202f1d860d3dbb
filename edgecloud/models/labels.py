"""ImageNet-1k class names, in the standard ILSVRC-2012 index order."""

from __future__ import annotations

from functools import lru_cache
from typing import List


@lru_cache(maxsize=1)
def imagenet_labels() -> List[str]:
    """Short names of the 1000 classes (the first synonym of each WordNet entry)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes())]
