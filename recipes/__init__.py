"""Recipes: data preparation, training launchers, evaluation and the sample world."""
