"""The vocabulary every layer shares, free of torch: what a cell is (CellSpec, Cell), what a
rendered cell offers (CellResult, CellOutcome), one progress record (Progress), and the limits
a grid and its settings stay within (Limits, MAX_SEED, MAX_SIDE, MAX_STEPS, SpecError, the
axis table). Nothing here imports torch or another package of this project, so the app's page,
the samplers, the engine and the output side all import it alike.
"""
