"""Fine-tuning jobs: validation, the state machine, the scheduler, the launcher, and the Ray job driver
that runs `trainers` and records what it reports."""
