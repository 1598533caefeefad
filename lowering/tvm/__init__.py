"""The Apache TVM backend: a Program's whole time loop lowered to one TIR function and compiled.

Modules, in the order a program goes through them:

* ``rules.py``: the rule table, one record per op (fused elementwise expression, leaf or
  kernel); the fusible set and the index maps are derived from it.
* ``schedule.py``: levels, loop-nest groups, stored values, in-place state updates
  (``graphs.py``: the graph facts it shares with the kernels).
* ``emitter.py``: one evaluation of a graph as TIR, following its schedule; ``kernels.py`` and
  ``einsum_tiles.py``: the templated loop nests of the non-fused ops.
* ``emit.py``: the whole function (trials, time loop, records, workspaces); ``--emit tir``.
* ``build.py``: target, ``tvm.compile``, the compile cache (``cache.py``) and ``export``.
* ``executor.py``: ``TvmExecutor``, backend "tvm".
* ``tir.py``: the TIR vocabulary they share (lazy TVM import, casts, stored values).

Fast mode first runs ``compiler/passes/fuse_accumulations.py`` on the program.
"""
