"""Caching past one process: chunk ranges as units of work on Ray, merged into one store."""
