"""Benchmarks and the demo, apart from the core: `python -m rlhf.bench generate|annotate|train|load`
and the scripted demo loop behind `rlhf demo`."""
