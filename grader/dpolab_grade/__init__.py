"""``dpolab-grade``: a class's submissions to grades and feedback in one command.

Built on nbgrader's own converters (``autograde``, ``generate_feedback``) and its gradebook.
One idea per module:

``inputs``         find the submissions (nbgrader layout, flat LMS folders, zips) and check each file
``course``         the grader's course: the release and its gradebook, generated once from ``solutions/``
``sandbox``        the student's kernel: resource limits (prlimit), file and network isolation (bubblewrap)
``watchdog``       the kernel's process tree watched from the worker: killed past the process or memory limit
``records``        what a hidden test observed (Probe, in the kernel) and how the grader judges it
``fixtures``       the records of the hidden tests on the solutions: the expected values, made once
``preprocessors``  hidden tests judged after execution, output size caps, hidden tracebacks removed
``pipeline``       nbgrader's autograde and feedback pipelines with the judge (dpolab-grade and plain
                   nbgrader alike: ``use_judge(c)`` in an nbgrader_config.py)
``worker``         one notebook of one student, graded in its own scratch course (a subprocess)
``gradebook``      the per-notebook results merged into one gradebook by one writer
``reports``        grades.csv, cells.csv, report.html (``class_report``: the class's figures)
``runner``         the plan: what to (re)grade, in parallel, with a wall-clock limit per notebook
``shards``         ``--shard K/N`` (a stable share of the class by a hash of the id) and ``merge``
``cli``            the ``dpolab-grade`` command
``student_package`` the ``dpolab-graded-course`` command: release notebooks and a dpolab without the
                   reference, for students (and, mounted by the sandbox, for the grader's kernel)
"""

# What is in force (issue 9). The command, layouts and safe zips, restored grade cells, the per-cell
# timeout and per-notebook wall-clock limit, memory and file-size limits, output caps, ungradable
# rows with reasons, hidden tests and their traceback lines out of the feedback, parallel workers
# merged by one writer, re-grading only what changed. Hidden tests are judged outside the kernel:
# they record observations (records), the grader compares them with fixtures made from the
# solutions (fixtures) after the kernel has returned (preprocessors.JudgeRecords). The kernel runs
# under bubblewrap with the student package (student_package) mounted over its dpolab, over ipc
# sockets with no network; the worker's watchdog kills its tree past Limits.max_processes
# processes or memory_mb of resident memory; prlimit --nproc is a backstop for a non-root grader.
# Not limited: CPU share (cgroups would need a delegated cgroup or systemd-run); the total size of
# the sandbox's in-memory /tmp and work folder (limited per file by RLIMIT_FSIZE; bwrap >= 0.7 has
# --size for the tmpfs).
# Issue 13: the same judge in plain `nbgrader autograde` and formgrader (pipeline.use_judge in
# nbgrader_config.py; fixtures made on first use and cached); without it a hidden test fails its
# cell (records.Probe.send, fail closed). Students missing notebooks are `incomplete`, not
# `ungradable`; OUT is an nbgrader course folder formgrader opens; report.html (class_report).
