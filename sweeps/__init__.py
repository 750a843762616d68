"""Sweeps: grids rendered headless, on one process or many, resumable, at any size.

    shards.py     which cells render together (work units) and which process renders which
    processes.py  the processes Hugging Face Accelerate launched (one when run plainly)
    seeds.py      a resumed run keeps the random seeds it was started with
    run.py        run_sweep(): prepare or resume the folder, render this process's share,
                  gather the records, write grid, metrics and manifest on the main process
"""
