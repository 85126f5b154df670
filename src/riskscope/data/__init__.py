"""Data: datasets (built-in and user files), the activation store, its verification and resumable writer."""

from ._cache import CacheConfig, CacheStats, cache_activations, check_store
from ._chunks import ChunkWriter, ChunkWritten, ChunkedStore, store_fingerprint
from ._datasets import BUILTIN_VERSIONS, BUILTINS, DEFAULT_DATASET, MAX_TEXT_CHARS, Dataset, Row, list_builtins, load_dataset
from ._lengths import check_text_lengths, max_token_chars
from ._store import Store, StoreVerification, verify_store

__all__ = [
    "BUILTIN_VERSIONS", "BUILTINS", "DEFAULT_DATASET", "MAX_TEXT_CHARS", "CacheConfig", "CacheStats", "ChunkWriter", "ChunkWritten",
    "ChunkedStore", "Dataset", "Row", "Store",
    "StoreVerification", "cache_activations", "check_store", "check_text_lengths", "list_builtins",
    "load_dataset", "max_token_chars", "store_fingerprint", "verify_store",
]
