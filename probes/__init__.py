"""Zero-layer probes: pure functions of a readout (continuation log-probs, calibration,
paired statistics, reward scoring, generation)."""
