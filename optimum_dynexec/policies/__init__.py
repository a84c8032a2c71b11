"""Pure decision rules (NumPy only): when to exit, and how to calibrate it."""

from .early_exit import ExitPolicy, calibrate_threshold, exit_scores, expected_cost, select_exits, simulate_exits

__all__ = ["ExitPolicy", "calibrate_threshold", "exit_scores", "expected_cost", "select_exits", "simulate_exits"]
