"""The lab: experiments run with the library, above it.

Multi-seed experiments (ReFT arms, arithmetic learning, CodePMP), the Frozen Lake comparison
and its claims (:mod:`ift.lab.frozen_lake`), HumanEval and code-pair runs (:mod:`ift.lab.code`),
the SFT-vs-RL code study (:mod:`ift.lab.code_study`), worker processes, statistics and the hardware description of a result. The library (core,
data, rewards, tasks, objectives, callbacks, modules) never imports the lab; the ``ift``
command registers the lab's sub-commands.
"""
