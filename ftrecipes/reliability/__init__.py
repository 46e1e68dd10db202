"""Reliability pieces that any trainer can call: the checkpoint commit protocol and retention
(`checkpoint`), choosing the checkpoint to resume from (`resume`), and preflight checks for disk
space and secrets (`preflight`). None of them imports torch."""
