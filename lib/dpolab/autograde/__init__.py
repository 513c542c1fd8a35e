"""``dpolab-grade``: a class's submissions to grades and feedback in one command.

Built on nbgrader's own converters (``autograde``, ``generate_feedback``) and its gradebook.
One idea per module:

``inputs``         find the submissions (nbgrader layout, flat LMS folders, zips) and check each file
``course``         the grader's course: the release and its gradebook, generated once from ``solutions/``
``sandbox``        the student's kernel: resource limits (prlimit) and file isolation (bubblewrap)
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
# Left:
# - part B: hidden tests still compare with dpolab's reference inside the student's kernel
#   (tests/test_grade_cli.py::test_monkeypatching_earns_nothing is xfail strict). The kernel's
#   environment no longer holds the reference under bubblewrap (the student package is mounted over
#   its dpolab); without bubblewrap `--kernel-python` must name an environment with the student package.
# - the sandbox shares the network (the kernel speaks TCP on loopback); an ipc transport
#   (jupyter_client `transport="ipc"`, sockets in the runtime folder) would allow --unshare-net.
# - no limit on the number of processes (only a PID namespace) and none on resident memory
#   (RLIMIT_AS only; cgroups would need a delegated cgroup or systemd-run).
