"""Tests of the scripts in bench/ that a GPU day depends on, run at a small size on the CPU."""
