"""Training machinery shared by every task: the recipe, the loop, checkpoints, the weights' moving average and
the user card a run leaves behind. The task plugin says what one training step is; this package does the rest."""
