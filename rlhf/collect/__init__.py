"""Collecting rankings: the workbench facade over the store, the annotation service, the
pre-generator that keeps comparisons ready, suggestions, reports and the reward audit, and the
files users bring and take away (formats, exports)."""
