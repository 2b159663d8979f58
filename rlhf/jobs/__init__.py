"""Training jobs: the service that checks and snapshots them, the runner that starts the
worker subprocess and registers its model, the files of a job directory, the CLI request
files, and the selection of the rows a job trains on."""
