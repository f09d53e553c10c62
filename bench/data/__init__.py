"""Session data: the standard preprocessed layout, the synthetic default, splits and batches."""
