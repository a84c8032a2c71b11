"""Side-by-side benchmarks against optimum-intel's plain classes.

python -m optimum_dynexec.reference.benchmark <technique>
"""
