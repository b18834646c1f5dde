"""The command line and the experiment runners: demo, sweep, study, reproduce targets, robustness.

Apart from the bound code: it uses `genbounds.data` and `genbounds.train` and the optional
plotting and console packages, and nothing in the core imports it. The entry point is
`genbounds.experiments.cli:main` (the `genbounds` command).
"""
