"""Benchmarks that drive the whole workbench from outside, as its users do (a real server,
real clients). They sit beside the layers, not in them: like the tests, they may use app/,
rlhf/ and storage/. Each prints figures with an in-run reference; none asserts a time."""
