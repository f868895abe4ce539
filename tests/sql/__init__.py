"""Tests of the sql layer."""
