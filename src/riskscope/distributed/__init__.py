"""Caching past one process: chunk ranges as units of work on Ray, merged into one store."""

from ._config import (ENGINES, DistributedConfig, DistributedError, Engine, ModelSpec, check_engine, check_reachable,
                      parse_address)
from ._ray import CacheWorker, DistributedStats, ProgressBoard, cache_distributed

__all__ = ["CacheWorker", "DistributedConfig", "DistributedError", "DistributedStats", "ENGINES", "Engine",
           "ModelSpec", "ProgressBoard", "cache_distributed", "check_engine", "check_reachable", "parse_address"]
