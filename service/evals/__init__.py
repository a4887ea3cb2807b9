"""Evals: OpenAI's Evals API over `evals` (graders, runner, suites), and the runs that drive it."""
