"""The venvstacks-docker vs venvstacks 0.7.0 and 0.8.0 benchmark behind ``benchmarks/run_benchmarks.py``.

* ``config``: paths, versions, targets and labels shared by everything else;
* ``harness``: running one command with its log, timing it, machine information;
* ``tools``, ``pbs_shim``: the tools' venvs and the runtime archive they all use;
* ``projects``: the per-tool copies of ``sample_project`` and inspecting what they publish;
* ``session``: the state of one run and the repeat loop around every timed step;
* ``scenarios``: what is measured, one function per scenario, and the commands as data;
* ``summary``, ``report``, ``templates/benchmarks.md.j2``: the Markdown report.
"""
