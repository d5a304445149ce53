"""Bound propagation: the IR, the op rules and the engines.

Importing this package (the verifier and the server do, before torch) bounds how long torch's
OpenMP threads spin between parallel regions: GOMP_SPINCOUNT=10000 (libgomp reads it once,
when torch loads it; its default is 300000, then a sleep). Spinning decides two costs:

* On a machine whose cores other processes hold, long spins steal the cores from the thread
  with work: with libgomp's active default a Gelu relaxation of 2,048 elements took 2-4.5 s
  instead of 0.02 s (a GenBaB run 2 s past its deadline). nonlinear_digits gelu beside two
  busy processes, `bench --timeout-cap 8`, 20 instances: 37.6 s at the default, 29.8 s with
  passive waiting (no spin), 29.9 s at 10000.
* On free cores, a thread that sleeps at every barrier is woken by a system call for the next
  op, and a branch-and-bound step is thousands of small ops: oval21 base img590, `verify
  --timeout 60`, two threads: 10.7-11.8k domains passive (0.73M voluntary context switches),
  15.3-16.6k at 10000 (22k switches).

A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins (we then set neither).

It also makes glibc keep freed memory in the heap for the next tensor (``bounds.heap``): a
large temporary on fresh mmap'd pages cost a page fault per 4 kB page on every pass.
"""

import os

from bounds import heap

SPIN_COUNT = "10000"
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
heap.keep_freed_pages()
