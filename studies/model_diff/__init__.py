"""Model diffing study (issue 14): what RL changed between a pair's base and chat models."""
