"""Many machines at once: ``treeboot fleet PLAN.toml`` on Ansible.

Takes a plan (hosts and the machines to install on them, see :mod:`~treeboot.fleet.plan`),
gives an Ansible inventory, playbook and ``ansible.cfg`` (:mod:`~treeboot.fleet.emit`) that
use the collection shipped in ``collection/`` (module ``treeboot.install.vm``, which runs
``treeboot.install`` on each host), and runs them (:mod:`~treeboot.fleet.run`).

It sits beside ``explain`` above ``boot``; it imports only ``download`` (``--prefetch``) and
the ground floor, never ``cli``. The collection's module imports ``boot`` on the target host.
"""
