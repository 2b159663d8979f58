"""Simulated annotators: the annotator base and the reward-model annotator, the rules, the
LLM judge, and the spec strings that name them (`--annotator`)."""
