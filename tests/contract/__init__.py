"""The task-contract suite: drives any installed model through every verb its task supports (cycle.run_cycle),
on a toy task of its own (toy_task) and on zoo's classifier and detector. docs/plugins/tasks.md says how to run it
on a third-party task."""
