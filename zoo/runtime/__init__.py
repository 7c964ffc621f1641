"""The shared runtime: data, evaluation, prediction. Torch is imported here, never on the listing path."""
