"""Data: datasets (built-in and user files), the activation store and its resumable writer."""

from ._datasets import BUILTINS, DEFAULT_DATASET, Dataset, Row, list_builtins, load_dataset
from ._store import CacheConfig, CacheStats, Store, cache_activations, check_store

__all__ = [
    "BUILTINS", "DEFAULT_DATASET", "CacheConfig", "CacheStats", "Dataset", "Row", "Store", "cache_activations",
    "check_store", "list_builtins", "load_dataset",
]
