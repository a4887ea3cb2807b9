"""Fine-tuning jobs: state machine, launcher, reconciler (see the fine-tuning issue)."""
