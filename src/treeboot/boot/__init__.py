"""Stage 4, boot: plan a machine and run it.

Takes: an InstallRequest. Gives: a :class:`~treeboot.boot.plan.BootPlan`, rendered by the pure
functions of ``boot/backends/`` (QEMU argv today) and run and watched until the install ends.
The orchestrator (:mod:`~treeboot.boot.install`) imports its steps (:mod:`~treeboot.boot.steps`),
never the reverse. A new backend goes in ``boot/backends/``.
May import: ``prepare``, ``download`` and everything below them.
"""
