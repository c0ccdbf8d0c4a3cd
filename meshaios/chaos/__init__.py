"""Chaos testing built in: kill, restart and pause nodes of a local mesh while a workload with a known answer
runs, then account for every task like Jepsen's queue checker (lost / duplicated / wrong)."""
