"""Comparing model versions: the Compare service (side by side, blind arena battles) and
automatic evaluation of one version against another."""
