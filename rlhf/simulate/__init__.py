"""Simulated annotators: rule annotators and the reward-model annotator, the LLM judge, and
the spec strings that name them (`--annotator`)."""
