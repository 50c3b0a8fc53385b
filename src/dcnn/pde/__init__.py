"""PDEs for physics-informed training: `problems` (point sets, loss terms and evaluation, one
module per PDE), `solvers` (the numerical solvers behind generated data and reference solutions),
`residuals` (the equations on input-derivative jets), `metrics` (grid error metrics) and
`sampling` (quasi-random points)."""
