"""Tests of the python layer."""
