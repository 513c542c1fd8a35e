"""``dpolab-grade``: a class's submissions to grades and feedback in one command.

Built on nbgrader's own converters (``autograde``, ``generate_feedback``) and its gradebook.
One idea per module:

``inputs``         find the submissions (nbgrader layout, flat LMS folders, zips) and check each file
``course``         the grader's course: the release and its gradebook, generated once from ``solutions/``
``sandbox``        the student's kernel: resource limits (prlimit), file and network isolation (bubblewrap)
``watchdog``       the kernel's process tree watched from the worker: killed past the process or memory limit
``preprocessors``  output size caps, tracebacks of hidden tests removed from feedback
``worker``         one notebook of one student, graded in its own scratch course (a subprocess)
``gradebook``      the per-notebook results merged into one gradebook by one writer
``reports``        grades.csv, cells.csv
``runner``         the plan: what to (re)grade, in parallel, with a wall-clock limit per notebook
``cli``            the ``dpolab-grade`` command
``student_package`` the ``dpolab-graded-course`` command: release notebooks and a dpolab without the
                   reference, for students (and, mounted by the sandbox, for the grader's kernel)
"""

# Status (issue 9, part A). Done: the command, layouts and safe zips, restored grade cells, the
# per-cell timeout and per-notebook wall-clock limit, the memory and file-size limits, output caps,
# ungradable rows with reasons, hidden tests and their traceback lines out of the feedback, parallel
# workers merged by one writer, re-grading only what changed, bubblewrap isolation of the kernel.
# Sandbox hardening: the kernel speaks ZeroMQ over ipc sockets (a folder bound into the sandbox),
# so bubblewrap runs without --share-net (no loopback to the grader, no DNS); TCP with the network
# shared is the logged fallback where ipc or a network namespace is impossible. The worker's
# watchdog kills the kernel's tree past Limits.max_processes processes or memory_mb of resident
# memory (RSS, confirmed with PSS); prlimit --nproc is a backstop only for a non-root grader (root
# is exempt from RLIMIT_NPROC). benchmarks/bench_grading.py grades the full assignment (4 notebooks).
# Left:
# - part B: hidden tests still compare with dpolab's reference inside the student's kernel for all
#   but the grade cells converted to records (dpolab.autograde.records), and the kernel's
#   environment holds the reference (tests/test_grade_cli.py::test_monkeypatching_earns_nothing is
#   xfail strict). `--kernel-python` already lets the kernel run in another environment.
# - no CPU share (cgroups would need a delegated cgroup or systemd-run); the sandbox's in-memory
#   /tmp and its work folder are limited per file (RLIMIT_FSIZE), not in total (bwrap >= 0.7 has
#   --size for the tmpfs).
# - the 40-student benchmark figures (to be run on an idle machine).
