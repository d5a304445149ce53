"""Bound propagation: the IR, the op rules and the engines.

Importing this package (the verifier and the server do, before torch) makes OpenMP threads
wait passively: libgomp reads ``OMP_WAIT_POLICY`` once, when torch loads it. With the default
active wait, torch's two threads spin at every op's barrier, and on a machine where other
processes hold the cores a Gelu relaxation of 2,048 elements took 2-4.5 s instead of 0.02 s
(a GenBaB run 2 s past its deadline); passive waiting costs nothing measurable when the cores
are free. A user's own setting wins.

It also makes glibc keep freed memory in the heap for the next tensor (``bounds.heap``): a
large temporary on fresh mmap'd pages cost a page fault per 4 kB page on every pass.
"""

import os

from bounds import heap

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
heap.keep_freed_pages()
