"""Language models as the workbench uses them: loading and saving (precision, adapters),
sampling, reward scoring, log-probabilities, a bounded model cache, the sampler child process and
the measurements it runs."""
