"""Detection and localization metrics, evaluators and plots."""
