"""``search-r1 eval``: the paper's methods on the paper's benchmarks, scored by the training reward."""
