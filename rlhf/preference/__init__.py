"""Preference maths, pure (no store, no torch): the ranking grammar, agreement between
annotators, preference pairs and unpaired rows built from rankings, arena ratings."""
