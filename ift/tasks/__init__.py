"""Tasks: one folder each (environment or generator, data module, reward, metrics, plot, command).

A task builds on every lower layer (core, data, rewards, objectives, callbacks, modules);
nothing below imports a task. The ``ift`` command registers each task's sub-command.
"""
