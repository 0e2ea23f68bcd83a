"""A launch *package*: builds a small table of model scores with tabulate."""
