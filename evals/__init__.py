"""evals: see ARCHITECTURE in the README."""
