"""Model organisms: models with planted backdoors (ground truth for the detectors), their metrics and tests."""
