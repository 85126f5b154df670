"""The main job: cache -> probes -> live-model analyses -> report, on run folders."""

from ._analyses import AnalysisConfig, AnalysisOutputs, run_analyses
from ._run import (
    ANALYSES, ProbeRunConfig, RunConfig, analyze_run, parse_skip, probe_run, run_folds, write_run_manifest,
)

__all__ = [
    "ANALYSES", "AnalysisConfig", "AnalysisOutputs", "ProbeRunConfig", "RunConfig", "analyze_run", "parse_skip",
    "probe_run", "run_analyses", "run_folds", "write_run_manifest",
]
