"""Trainers: one module per method, each `train(inputs: TrainInputs) -> dict[str, float]`.

A trainer takes the rows of a job's snapshot (a DataFrame) and its settings and writes the
trained model to `inputs.out_dir`; it never knows where the rows came from (docs/architecture.md).
`rlhf.train.methods` lists the methods, their data, defaults and options.
"""
